"""Checkpoints of a tiny pix2pix whose generator outputs one known constant everywhere (its last convolution's
weights zeroed, its bias atanh of the value, so tanh gives the value back), written by the model's own save: ensemble
members that really differ, whose fused output is known by hand. No training."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from models import create_model
from options.train_options import TrainOptions
from data.splits import write_splits
from volume_fixtures import phantom, write_subject

# a tiny pix2pix MR -> CT on 32x32 slices (CT window [-1024, 3000] HU)
MODEL = ['--model', 'pix2pix', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4', '--crop_size', '32',
         '--load_size', '32', '--output_nc', '1', '--no_dropout', '--dataset_mode', 'triplanar_aligned',
         '--gpu_ids', '-1', '--num_threads', '0']
CT_LOW, CT_HIGH = -1024.0, 3000.0


def hu(value: float) -> float:
    """A network output in [-1, 1] in HU, by hand: the CT window's linear map."""
    return (value + 1) / 2 * (CT_HIGH - CT_LOW) + CT_LOW


def constant_checkpoint(checkpoints: Path, name: str, value: float, *flags: str) -> None:
    """``<checkpoints>/<name>/latest_net_G.pth`` (and _D) of a generator that outputs ``value`` (in (-1, 1))."""
    opt = TrainOptions().parse([*MODEL, '--checkpoints_dir', str(checkpoints), '--name', name, *flags],
                               setup_device=False)
    model = create_model(opt)
    last = [m for m in model.netG.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.atanh(value))
    model.save_networks('latest')


def tiny_dataset(root: Path) -> Path:
    """``root/data``: SynthRAD-layout phantom subjects 'a' (train) and 'b' (test, 12 x 14 x 10 voxels)."""
    data = root / 'data'
    write_subject(data, 'a')
    write_subject(data, 'b', phantom(seed=3))
    write_splits(str(data), {'train': ['a'], 'test': ['b']})
    return data
