"""ResViT's CNN-only generator, ``--netG res_cnn`` (icon-lab/ResViT's Res_CNN): the first stage of ResViT's
two-stage recipe. The same encoder, nine ART blocks without transformer paths (residual CNN blocks only) and
decoder as ``--netG resvit`` (models/generators/resvit.py), with the same parameter names, so its trained
``net_G.pth`` starts resvit through ``--pretrained_G``. About 12 M parameters at ngf 64; any size that is a
multiple of 4.
"""
from __future__ import annotations

import argparse

from .resvit import ResViT


class ResCNN(ResViT):
    """(N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1], H and W multiples of 4."""

    transformer_blocks: tuple[int, ...] = ()

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return parser

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> ResCNN:
        return cls(input_nc, output_nc, ngf, opt.crop_size)       # PyTorch's initialisation, as officially
