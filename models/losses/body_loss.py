"""The body-restricted pixel loss (``--loss_region body``): L1 averaged over the body mask only, the region every
SynthRAD metric scores (their MAE, PSNR and SSIM are all computed inside the mask), optionally grown so the loss
also sees the skin boundary: by ``--body_margin_voxels`` voxels of the source grid (the dataset grows the slice's
mask before resizing it: data/triplanar_aligned_dataset.py) and by ``--body_dilation`` pixels of the training slice.

Why a margin in voxels: putting a predicted slice back on the voxel grid (util.slicing.from_square) averages the
pixels within one voxel of each voxel centre, so the MAE of a voxel at the mask's edge depends on predicted pixels
up to one voxel outside the mask; a one-voxel margin trains exactly those, whatever the pixels per voxel."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from util.body_mask import dilate
from util.parser_flags import has_option

LOSS_REGIONS = ('slice', 'body')


def add_loss_region_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--loss_region, --body_dilation (adding twice is a no-op)."""
    if has_option(parser, '--loss_region'):
        return parser
    parser.add_argument('--loss_region', default='slice', choices=LOSS_REGIONS,
                        help='where the L1 pixel loss is computed: the whole slice (the paper) or inside the body '
                             'mask (what SynthRAD scores; needs --dataset_mode triplanar_aligned). GAN, MRNet '
                             'feature and mask losses stay on the whole slice')
    parser.add_argument('--body_dilation', type=int, default=0, metavar='PIXELS',
                        help='with --loss_region body: grow the body mask by this many pixels of the training slice '
                             '(square neighbourhood)')
    parser.add_argument('--body_margin_voxels', type=int, default=0, metavar='VOXELS',
                        help='with --loss_region body: grow the body mask by this many voxels of the source grid '
                             'before the slice is resized (then --body_dilation pixels on top); 1 covers the voxels '
                             'that reassembly blends into the edge of the scored mask, at any resolution')
    return parser


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean |pred - target| over the pixels where ``mask`` (N, 1, H, W) is 1, all channels: sum(|d| m) / (C sum m);
    0 when the mask is empty."""
    weight = mask.to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, opt: argparse.Namespace,
               mask: torch.Tensor | None) -> torch.Tensor:
    """The L1 of ``--loss_region``: over the whole slice (nn.L1Loss), or inside the (dilated) body ``mask``."""
    if opt.loss_region == 'slice':
        return F.l1_loss(pred, target)
    if mask is None:
        raise ValueError('--loss_region body needs the body mask of each slice, which --dataset_mode '
                         f'{opt.dataset_mode} does not give; use --dataset_mode triplanar_aligned')
    return masked_l1(pred, target, dilate(mask, int(opt.body_dilation)))
