"""What test.py runs for a 3D checkpoint (``--model unet3d``, ``--netG unet3d``): the generator(s) rebuilt from the
checkpoint (inference/loading.py) over each test subject's whole volume by sliding windows
(inference/sliding_window.py), behind the interface test.py uses for a model (``set_input``, ``test``,
``get_current_visuals``, ``spread``).

Which path runs is the checkpoint's choice: :func:`check_checkpoint_kind` refuses a 3D checkpoint given to a
slice-wise dataset and a slice-wise one given to ``--dataset_mode patch3d``, naming both, before any data is read.
"""
from __future__ import annotations

import argparse
import os

import torch

from inference.loading import describe_kind, generator_path, is_volume_checkpoint, load_ensemble, \
    member_settings_conflict, stored_training_options
from inference.sliding_window import check_overlap, translate_volume

VOLUME_DATASETS = ('patch3d',)              # --dataset_mode values whose test items are whole volumes
WINDOW_BATCH = 2                            # windows per forward pass


def checkpoint_epoch(opt: argparse.Namespace) -> str:
    return f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch


def check_checkpoint_kind(opt: argparse.Namespace, names: list[str]) -> bool:
    """Whether test.py's experiments ``names`` are 3D networks (sliding windows); ValueError naming both sides when
    an ensemble mixes 3D and slice-wise members, or when the checkpoints' kind is not --dataset_mode's. A missing
    checkpoint is left to test.py to report."""
    epoch = checkpoint_epoch(opt)
    stored = [stored_training_options(opt.checkpoints_dir, n, epoch) for n in names]
    if not all(stored):
        return False
    why = member_settings_conflict(names, stored)
    if why:
        raise ValueError(why)
    volume = is_volume_checkpoint(stored[0])
    if volume != (opt.dataset_mode in VOLUME_DATASETS):
        path = generator_path(opt.checkpoints_dir, names[0], epoch)
        if volume:
            raise ValueError(f'checkpoint {path}: {describe_kind(names[0], stored[0])} was trained on 3D patches, '
                             f'but --dataset_mode {opt.dataset_mode} gives slices; test it with --model unet3d '
                             f'(--dataset_mode patch3d)')
        raise ValueError(f'checkpoint {path}: {describe_kind(names[0], stored[0])} was trained on slices '
                         f'(--dataset_mode {stored[0].get("dataset_mode", "?")}), but --dataset_mode '
                         f'{opt.dataset_mode} gives whole volumes for a 3D network; test it with --model '
                         f'{stored[0].get("model", "?")} --dataset_mode {stored[0].get("dataset_mode", "?")}')
    return volume


class SlidingWindowModel:
    """One 3D generator or an ensemble of them (--name a,b,c, fused by --ensemble_fuse) as test.py runs a model:
    items ``A`` (N, C, X, Y, Z) whole volumes in [-1, 1]; ``fake_B`` (N, C, X, Y, Z) and ``spread``
    (N, 1, X, Y, Z) or None (--tta flip: the 8 mirrorings; an ensemble: its members). --tta is applied here, so
    inference.test_time.run_test calls :meth:`test` as it is (``applies_tta``)."""

    applies_tta = True

    def __init__(self, opt: argparse.Namespace, names: list[str]):
        self.opt, self.names = opt, names
        self.overlap = check_overlap(opt.sw_overlap)
        self.generator = load_ensemble(opt.checkpoints_dir, names, checkpoint_epoch(opt), opt.device,
                                       given={'tta': opt.tta}, fuse=opt.ensemble_fuse)
        self.members = self.generator.members or [self.generator]
        self.save_dir = os.path.join(opt.checkpoints_dir, names[0])
        self.model_names = ['G']
        self.visual_names = ['real_A', 'fake_B', 'real_B']
        self.spread = None

    def checkpoints(self) -> list[str]:
        """The generator file of every member."""
        return self.generator.paths

    def prepare_data(self, dataset) -> None:
        """Nothing to prepare (no SAM features)."""

    def eval(self) -> None:
        """The generators are loaded in eval mode."""

    def set_input(self, data: dict) -> None:
        self.real_A, self.real_B = data['A'], data.get('B')
        self.image_paths = data['A_paths']

    def test(self) -> None:
        outputs = [translate_volume(self.members, self.generator.fuse, a.to(self.generator.device), self.overlap,
                                    WINDOW_BATCH) for a in self.real_A]
        self.fake_B = torch.stack([out for out, _ in outputs])
        self.spread = torch.stack([s for _, s in outputs]) if outputs[0][1] is not None else None

    def get_current_visuals(self) -> dict:
        return {k: getattr(self, k) for k in self.visual_names if getattr(self, k, None) is not None}

    def get_image_paths(self) -> list[str]:
        return self.image_paths

