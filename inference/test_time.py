"""Test-time augmentation (``--tta flip``) and ensembles of checkpoints (test.py ``--name a,b,c``).

Flip TTA: the generator translates the slice and its three in-plane flips (left-right, up-down, both); each output
is flipped back and the four are averaged. Their per-pixel standard deviation is kept as ``spread`` (N, 1, H, W)
in [-1, 1] units, which the disagreement map adds (predict). A flipped slice gets its SAM feature from SAM itself
(a cached feature belongs to the unflipped slice).

Ensembles: every member model runs on the batch (each with its own TTA) and the outputs are fused pixel by pixel
(``--ensemble_fuse`` mean or median; the same voxel of every member's plane volume, so voxel-wise); the members'
standard deviation, combined with their TTA spread, is the ensemble's ``spread``. Members must agree on what
their input and output slices are (modalities, direction, 2.5D context, crop size and resizing, intensity
windows): they are refused otherwise, naming both experiments and the setting.
"""
from __future__ import annotations

import argparse
import copy
import os

import torch

from inference.loading import member_settings_conflict, stored_training_options
from models import create_model
from util.json_file import write_json
from util.util import file_sha256

FLIPS = ((-1,), (-2,), (-2, -1), ())        # the identity last: visuals such as MRNet's masks are its own


def check_tta_input(model, x) -> None:
    """ValueError unless ``x`` is a batch of image slices (N, C, H, W) the flips apply to."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'--tta flip flips image slices (N, C, H, W), but --model {model.opt.model}\'s input is '
                         f'{shape}; use --tta none')


def run_test(model) -> None:
    """``model.test()``, averaged over the in-plane flips when its options ask for --tta flip (test.py, validation,
    ensemble members, compare.py's timing); an :class:`EnsembleModel` runs each member so, and a model that
    applies --tta itself (``applies_tta``: inference/volume_model.py's 3D mirroring) as it is."""
    if isinstance(model, EnsembleModel) or model.opt.tta != 'flip' or getattr(model, 'applies_tta', False):
        model.test()
        return
    with torch.no_grad(), model.autocast():
        flip_average(model)
        model.compute_visuals()


def flip_average(model) -> None:
    """Run ``model.forward()`` on the slice and its in-plane flips; ``fake_B`` becomes their mean, ``spread`` their
    spread (N, 1, H, W, see :func:`fuse`)."""
    real_A = getattr(model, 'real_A', None)
    check_tta_input(model, real_A)
    feature = getattr(model, 'sam_feature', None)
    outputs = []
    for dims in FLIPS:
        model.real_A = real_A.flip(dims) if dims else real_A
        if hasattr(model, 'sam_feature'):
            model.sam_feature = None if dims else feature
        model.forward()
        if model.fake_B.shape[-2:] != real_A.shape[-2:]:
            raise ValueError(f'--tta flip needs an output slice of the input\'s size; --model {model.opt.model} '
                             f'gives {tuple(model.fake_B.shape)} for {tuple(real_A.shape)}')
        outputs.append(model.fake_B.flip(dims) if dims else model.fake_B)
    model.real_A = real_A
    model.fake_B, model.spread = fuse(torch.stack(outputs))


def fuse(outputs: torch.Tensor, method: str = 'mean', spreads: list[torch.Tensor] | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(fused (N, C, H, W), spread (N, 1, H, W)) of ``outputs`` (M, N, C, H, W): their pixel-wise mean or median
    (the average of the middle two for an even M), and sqrt(channel mean of their variance + mean of the given
    ``spreads`` squared), the members' disagreement combined with each member's own (TTA) spread."""
    if method == 'median':
        ordered = outputs.sort(0).values
        m = outputs.shape[0]
        fused = (ordered[(m - 1) // 2] + ordered[m // 2]) / 2
    else:
        fused = outputs.mean(0)
    var = outputs.var(0, unbiased=False).mean(1, keepdim=True)
    if spreads:
        var = var + torch.stack(spreads).pow(2).mean(0)
    return fused, var.sqrt()


def flip_outputs(net, x: torch.Tensor) -> torch.Tensor:
    """(4, N, C, H, W): ``net`` on ``x`` and its in-plane flips, each flipped back (the identity last)."""
    return torch.stack([net(x.flip(d)).flip(d) if d else net(x) for d in FLIPS])



class EnsembleModel:
    """Several trained models of one data setting used as one by test.py: ``set_input``, ``test``,
    ``get_current_visuals`` (``fake_B`` fused, ``spread``), ``prepare_data``, ``eval``."""

    def __init__(self, opt: argparse.Namespace, names: list[str]):
        epoch = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
        stored = [stored_training_options(opt.checkpoints_dir, n, epoch) for n in names]
        why = member_settings_conflict(names, stored)
        if why:
            raise ValueError(why)
        self.opt, self.names = opt, names
        self.fuse = opt.ensemble_fuse
        self.members = []
        for name, options in zip(names, stored):
            member_opt = copy.copy(opt)
            member_opt.name = name
            for key in ('model', 'netG', 'ngf', 'norm', 'no_dropout', 'n_masks', 'no_sam', 'sam_input_size',
                        'sam_model_type', 'sam_embed_dim', 'sam_depth', 'sam_num_heads', 'sam_global_attn_indexes',
                        'mask_init_bias', 'init_type', 'init_gain'):
                if key in options:
                    setattr(member_opt, key, options[key])
            model = create_model(member_opt)
            model.setup(member_opt)
            self.members.append(model)
        self.model_names = self.members[0].model_names
        self.visual_names = ['real_A', 'fake_B', 'real_B']
        self.save_dir = self.members[0].save_dir

    def checkpoints(self) -> list[str]:
        """The generator file of every member."""
        epoch = f'iter_{self.opt.load_iter}' if self.opt.load_iter > 0 else self.opt.epoch
        return [m.network_path(epoch, 'G_A' if 'G_A' in m.model_names else 'G') for m in self.members]

    def prepare_data(self, dataset) -> None:
        """The SAM feature cache when every member's SAM is the same (else each member runs SAM itself)."""
        identities = []
        for m in self.members:
            sam = getattr(m.unwrap(m.model_names[0]), 'sam', None)
            identities.append(None if sam is None else sam.cache_identity())
        dataset.dataset.use_sam_features('A', None)
        if len({repr(i) for i in identities}) == 1:
            self.members[0].prepare_data(dataset)

    def eval(self) -> None:
        for m in self.members:
            m.eval()

    def set_input(self, data: dict) -> None:
        for m in self.members:
            m.set_input(data)

    def test(self) -> None:
        outputs, spreads = [], []
        for m in self.members:
            run_test(m)
            outputs.append(m.fake_B)
            spreads.append(getattr(m, 'spread', None))
        self.fake_B, self.spread = fuse(torch.stack(outputs), self.fuse, [s for s in spreads if s is not None])
        first = self.members[0]
        self.real_A, self.real_B = first.real_A, getattr(first, 'real_B', None)
        self.image_paths = first.image_paths

    def get_current_visuals(self) -> dict:
        return {k: getattr(self, k) for k in self.visual_names if getattr(self, k, None) is not None}

    def get_image_paths(self) -> list[str]:
        return self.image_paths


def create_test_model(opt: argparse.Namespace, names: list[str]):
    """The model test.py (and compare.py's timing) runs: an :class:`EnsembleModel` of the experiments ``names``
    (--name a,b,c), else the model of --name with its networks loaded for --epoch."""
    if len(names) > 1:
        return EnsembleModel(opt, names)
    model = create_model(opt)
    model.setup(opt)
    return model


def write_members(path: str, checkpoints: list[str], fuse: str, **extra) -> None:
    """The ensemble's record at ``path`` (JSON, atomically): ``extra`` fields, the fusion and each member's
    checkpoint file (absolute) with its sha256 (test.py's ``ensemble.json``, predict's ``<output>_members.json``)."""
    write_json(path, {**extra, 'fuse': fuse, 'members': [{'checkpoint': os.path.abspath(p), 'sha256': file_sha256(p)}
                                                         for p in checkpoints]})


def ensemble_result_name(names: list[str]) -> str:
    """The results folder name of an ensemble: the members joined by '+' (a single experiment: its name)."""
    return '+'.join(os.path.basename(n) for n in names)
