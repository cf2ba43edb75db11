"""The body-restricted pixel loss (``--loss_region body``): L1 averaged over the body mask only, the region every
SynthRAD metric scores (their MAE, PSNR and SSIM are all computed inside the mask), optionally grown by
``--body_dilation`` pixels so the loss also sees the skin boundary."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

LOSS_REGIONS = ('slice', 'body')


def add_loss_region_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--loss_region, --body_dilation (adding twice is a no-op)."""
    if '--loss_region' in parser._option_string_actions:
        return parser
    parser.add_argument('--loss_region', default='slice', choices=LOSS_REGIONS,
                        help='where the L1 pixel loss is computed: the whole slice (the paper) or inside the body '
                             'mask (what SynthRAD scores; needs --dataset_mode triplanar_aligned). GAN, MRNet '
                             'feature and mask losses stay on the whole slice')
    parser.add_argument('--body_dilation', type=int, default=0, metavar='PIXELS',
                        help='with --loss_region body: grow the body mask by this many pixels (square neighbourhood)')
    return parser


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(N, 1, H, W) 0/1 mask grown by ``pixels`` in every direction (a (2p+1)^2 square max filter)."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean |pred - target| over the pixels where ``mask`` (N, 1, H, W) is 1, all channels: sum(|d| m) / (C sum m);
    0 when the mask is empty."""
    weight = mask.to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp_min(1.0)


def pixel_loss(pred: torch.Tensor, target: torch.Tensor, opt: argparse.Namespace,
               mask: torch.Tensor | None) -> torch.Tensor:
    """The L1 of ``--loss_region``: over the whole slice (nn.L1Loss), or inside the (dilated) body ``mask``."""
    if getattr(opt, 'loss_region', 'slice') == 'slice':
        return F.l1_loss(pred, target)
    if mask is None:
        raise ValueError('--loss_region body needs the body mask of each slice, which --dataset_mode '
                         f'{opt.dataset_mode} does not give; use --dataset_mode triplanar_aligned')
    return masked_l1(pred, target, dilate(mask, int(opt.body_dilation)))
