"""PPT's generator (Zhang et al., MICCAI 2024, github.com/coffeeNtv/PPT), ``--netG ppt``: the antialiased ResNet
generator of CUT (Park et al. 2020) as PPT configures it, with four downsamplings, as the MRNet paper ran it
inside the conditional GAN (PPT's own patch-contrastive and patch-alignment training is not reproduced).

    x (N, C, H, W), H and W multiples of 16
      -> reflection pad, 7x7 conv to 64, InstanceNorm, ReLU
      -> 4 x [3x3 conv doubling the width, InstanceNorm, ReLU, antialiased x1/2 (3x3 binomial blur, stride 2)]
      -> 9 residual blocks at 1024 channels (H/16)
      -> 4 x [antialiased x2 (4x4 binomial transposed blur), 3x3 conv halving the width, InstanceNorm, ReLU]
      -> reflection pad, 7x7 conv to output_nc, tanh

About 182 M parameters at ngf 64 (nine 3x3 residual blocks at 1024 channels hold 170 M of them); the count does
not depend on the image size. ``--ngf`` sets the width (64 as published); InstanceNorm and no dropout are fixed.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from util.parser_flags import add_flag

from ..layers import check_image_channels, init_weights
from .base import Generator
from .resnet import ResnetBlock

N_BLOCKS = 9


def binomial_filter(size: int) -> torch.Tensor:
    """(size, size) outer product of the binomial row (1 2 1 for 3, 1 3 3 1 for 4), summing to 1."""
    row = torch.tensor([float(math.comb(size - 1, k)) for k in range(size)])
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurDownsample(nn.Module):
    """Antialiased x1/2 (Zhang 2019): reflection pad 1, depthwise 3x3 binomial blur with stride 2.
    (N, C, H, W) -> (N, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer('kernel', binomial_filter(3)[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), self.kernel, stride=2, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Antialiased x2: replication pad 1, depthwise stride-2 transposed conv with the 4x4 binomial filter x4,
    cropped. (N, C, H, W) -> (N, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer('kernel', (binomial_filter(4) * 4)[None, None].repeat(channels, 1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode='replicate'), self.kernel, stride=2, padding=2,
                               groups=x.shape[1])
        return y[:, :, 1:-1, 1:-1]


class PPT(Generator):
    """(N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1], H and W multiples of 2^n_downsampling."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_flag(parser, '--ppt_n_downsampling', type=int, default=4, help=argparse.SUPPRESS)
        add_flag(parser, '--ppt_n_blocks', type=int, default=N_BLOCKS, help=argparse.SUPPRESS)
        return parser

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, n_downsampling: int = 4,
                 n_blocks: int = N_BLOCKS):
        super().__init__()
        self.input_nc, self.factor = input_nc, 2 ** n_downsampling
        norm = nn.InstanceNorm2d
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), norm(ngf), nn.ReLU(True)]
        for i in range(n_downsampling):
            width = ngf * 2 ** i
            layers += [nn.Conv2d(width, 2 * width, 3, padding=1), norm(2 * width), nn.ReLU(True),
                       BlurDownsample(2 * width)]
        width = ngf * 2 ** n_downsampling
        layers += [ResnetBlock(width, 'reflect', norm, use_dropout=False, use_bias=True) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            width = ngf * 2 ** (n_downsampling - i)
            layers += [BlurUpsample(width), nn.Conv2d(width, width // 2, 3, padding=1), norm(width // 2),
                       nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_channels(x, self.input_nc)
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f'--netG ppt needs height and width that are multiples of {self.factor}; got '
                             f'{x.shape[-2]}x{x.shape[-1]}')
        return self.model(x)

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> PPT:
        return init_weights(cls(input_nc, output_nc, ngf, opt.ppt_n_downsampling, opt.ppt_n_blocks),
                            init_type, init_gain)
