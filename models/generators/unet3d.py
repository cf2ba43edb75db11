"""``--netG unet3d``: nnU-Net's 3D U-Net (MONAI's DynUNet) with a tanh output, its kernels and strides planned from
``--patch_size`` and ``--target_spacing`` the way nnU-Net plans them (:func:`plan`).

The plan, stage by stage from the patch: an axis is halved while it stays at least ``MIN_FEATURE`` voxels
(``2 * MIN_FEATURE`` before halving; a lone axis needs ``3 * MIN_FEATURE``), at most ``--unet3d_max_pool`` times,
and only while its spacing is within a factor 2 of the finest spacing of the axes still being halved (so coarse
axes of anisotropic data wait until the in-plane spacing has caught up); convolutions are 3 wide along axes whose
spacing is within a factor 2 of the finest and 1 wide along coarser ones (3 once reached), and the bottleneck's are
3x3x3. Each side of the patch must then be a multiple of its axis' total stride (:attr:`Unet3d.divisor`); a patch
that is not is refused when the command line is parsed, naming the nearest size that is.

Without ``--target_spacing`` the voxels are planned as isotropic. Widths: ``--ngf`` at the first stage, doubled per
stage, at most 10 x ngf (nnU-Net: 32 .. 320). Normalisation: ``--norm instance`` (nnU-Net's, with affine) or
``batch``. ``--no_dropout``, ``--init_type`` and ``--init_gain`` are not used: DynUNet initialises its
convolutions as nnU-Net does (Kaiming, leaky ReLU 0.01) and has no dropout.

(N, input_nc, X, Y, Z) in [-1, 1] -> (N, output_nc, X, Y, Z) in [-1, 1].
"""
from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import torch

from data.patch3d_dataset import VOLUME_GENERATORS, add_patch_options, parse_patch_size
from data.resampling import parse_spacing
from .base import Generator

MIN_FEATURE = 4          # smallest side (voxels) of the deepest feature map
MAX_POOL = 5             # halvings per axis at most
NORMS = {'instance': ('INSTANCE', {'affine': True}), 'batch': ('BATCH', {'affine': True})}
TRAINING_MODELS = ('unet3d',)


class Plan(NamedTuple):
    """Per stage (the first unstrided, the last the bottleneck) the convolution ``kernels`` and ``strides``
    (x, y, z), and the total stride per axis, which every input side must be a multiple of (``divisor``)."""
    kernels: list[tuple[int, int, int]]
    strides: list[tuple[int, int, int]]
    divisor: tuple[int, int, int]


def is_volume_generator(name: str) -> bool:
    """True for a ``--netG`` that maps 3D volumes (N, C, X, Y, Z), not slices."""
    return name in VOLUME_GENERATORS


def plan(patch: tuple[int, int, int], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
         max_pool: int = MAX_POOL) -> Plan:
    """nnU-Net's kernels and strides for a patch of ``patch`` voxels of ``spacing`` mm (see the module
    docstring)."""
    size, space = [float(n) for n in patch], [float(s) for s in spacing]
    pools, kernel = [0, 0, 0], [1, 1, 1]
    kernels, strides = [], [(1, 1, 1)]
    while True:
        axes = [a for a in range(3) if size[a] >= 2 * MIN_FEATURE and pools[a] < max_pool]
        if axes:
            finest = min(space[a] for a in axes)
            axes = [a for a in axes if space[a] < 2 * finest]
        if not axes or (len(axes) == 1 and size[axes[0]] < 3 * MIN_FEATURE):
            break
        kernel = [3 if kernel[a] == 3 or space[a] < 2 * min(space) else 1 for a in range(3)]
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if a in axes else 1 for a in range(3)))
        for a in axes:
            pools[a] += 1
            space[a] *= 2
            size[a] = math.ceil(size[a] / 2)
    kernels.append((3, 3, 3))
    return Plan(kernels, strides, tuple(2 ** p for p in pools))


def nearest_valid(patch: tuple[int, int, int], spacing: tuple[float, float, float],
                  max_pool: int = MAX_POOL) -> tuple[int, int, int]:
    """The patch closest to ``patch`` that its own plan can take: each side rounded to the nearest multiple of its
    axis' total stride (halves up), until the plan of the rounded patch agrees."""
    size = tuple(patch)
    for _ in range(8):
        divisor = plan(size, spacing, max_pool).divisor
        rounded = tuple(max(d, int(math.floor(n / d + 0.5)) * d) for n, d in zip(size, divisor))
        if rounded == size:
            return size
        size = rounded
    return size


def planned(opt: argparse.Namespace) -> tuple[tuple[int, int, int], Plan]:
    """The patch size and the plan the options give; ValueError naming the nearest valid size when the strides
    cannot take the patch."""
    patch = parse_patch_size(opt.patch_size)
    spacing = parse_spacing(opt.target_spacing) or (1.0, 1.0, 1.0)
    if opt.unet3d_max_pool < 1:
        raise ValueError(f'--unet3d_max_pool {opt.unet3d_max_pool}: must be 1 or more')
    p = plan(patch, spacing, opt.unet3d_max_pool)
    if len(p.strides) < 2:
        raise ValueError(f'--patch_size {opt.patch_size}: too small for a U-Net (no side reaches '
                         f'{2 * MIN_FEATURE} voxels)')
    if any(n % d for n, d in zip(patch, p.divisor)):
        best = nearest_valid(patch, spacing, opt.unet3d_max_pool)
        raise ValueError(f'--patch_size {opt.patch_size} cannot be taken by the strides planned for it (spacing '
                         f'{"x".join(f"{s:g}" for s in spacing)} mm: each side must be a multiple of '
                         f'{"x".join(map(str, p.divisor))}); the nearest valid size is '
                         f'{"x".join(map(str, best))}')
    return patch, p


class Unet3d(Generator):
    """MONAI's DynUNet built from :func:`plan`, followed by tanh (see the module docstring)."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_patch_options(parser)
        parser.add_argument('--unet3d_max_pool', type=int, default=MAX_POOL,
                            help='unet3d: halvings per axis at most (nnU-Net plans up to 5 for 3D)')
        parser.add_argument('--unet3d_residual', action='store_true',
                            help='unet3d: residual convolution blocks (DynUNet res_block), nearer to the '
                                 'residual-encoder nnU-Net of the SynthRAD2025 winner')
        return parser

    @classmethod
    def check_options(cls, opt: argparse.Namespace) -> None:
        """The patch must fit the strides, the norm be one DynUNet has, and training go through --model unet3d
        (3D discriminator and patches); refused before any data is read."""
        planned(opt)
        if opt.norm not in NORMS:
            raise ValueError(f'--netG unet3d takes --norm {" or ".join(NORMS)}; got {opt.norm}')
        if opt.isTrain and opt.model not in TRAINING_MODELS:
            raise ValueError(f'--netG unet3d is a 3D network: train it with --model {" or ".join(TRAINING_MODELS)} '
                             f'(3D patches, 3D discriminator), not --model {opt.model}')

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> Unet3d:
        patch, p = planned(opt)
        return cls(input_nc, output_nc, ngf, p, patch, NORMS[norm], opt.unet3d_residual)

    def __init__(self, input_nc: int, output_nc: int, ngf: int, p: Plan, patch: tuple[int, int, int],
                 norm: tuple, residual: bool = False):
        super().__init__()
        from monai.networks.nets import DynUNet
        self.input_nc = input_nc
        self.divisor, self.patch_size = p.divisor, tuple(patch)
        filters = [min(ngf * 2 ** i, 10 * ngf) for i in range(len(p.strides))]
        self.net = DynUNet(3, input_nc, output_nc, p.kernels, p.strides, p.strides[1:], filters=filters,
                           norm_name=norm, res_block=residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.input_nc or any(n % d for n, d in zip(x.shape[2:], self.divisor)):
            raise ValueError(f'--netG unet3d takes (N, {self.input_nc}, X, Y, Z) volumes whose sides are multiples '
                             f'of {"x".join(map(str, self.divisor))}; got {tuple(x.shape)}')
        return torch.tanh(self.net(x))
