"""The classic toolkit's U-Net generators, ``--netG unet_128`` (7 levels) and ``unet_256`` (8 levels), as pix2pix
uses them.
The architecture and parameter count are the classic toolkit's for the same options.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from ..layers import NormLayer, check_image_channels, conv_bias_needed, get_norm_layer, init_weights
from .base import Generator


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: downsample (4x4 stride-2 conv), run ``submodule``, upsample
    (4x4 stride-2 transposed conv) and, except at the outermost level, concatenate the
    block's input as the skip connection.

    Inner levels: (N, outer_nc, H, W) -> (N, 2*outer_nc, H, W).
    Outermost: (N, input_nc, H, W) -> (N, outer_nc, H, W) through tanh.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm_layer: NormLayer = nn.BatchNorm2d, use_dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        use_bias = conv_bias_needed(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        up_in = inner_nc if innermost else inner_nc * 2

        if outermost:
            down: list[nn.Module] = [downconv]
            up: list[nn.Module] = [nn.ReLU(True),
                                   nn.ConvTranspose2d(up_in, outer_nc, kernel_size=4, stride=2, padding=1), nn.Tanh()]
        else:
            upconv = nn.ConvTranspose2d(up_in, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            down = [nn.LeakyReLU(0.2), downconv] + ([] if innermost else [norm_layer(inner_nc)])
            up = [nn.ReLU(True), upconv, norm_layer(outer_nc)]
            if use_dropout and not innermost:
                up.append(nn.Dropout(0.5))
        middle = [] if submodule is None else [submodule]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class Unet(Generator):
    """U-Net generator with ``num_downs`` stride-2 levels (7 for unet_128, 8 for unet_256):
    widths ngf, 2ngf, 4ngf, then 8ngf for every deeper level; the bottleneck is 1x1 for an
    input of side 2**num_downs.

    (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; H and W must be multiples of
    2**num_downs.
    """

    names = ('unet_128', 'unet_256')

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64,
                 norm_layer: NormLayer = nn.BatchNorm2d, use_dropout: bool = False):
        if num_downs < 5:
            raise ValueError(f'a U-Net needs num_downs >= 5, got {num_downs}')
        super().__init__()
        self.input_nc = input_nc
        self.num_downs = num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm_layer=norm_layer)

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> Unet:
        num_downs = {'unet_128': 7, 'unet_256': 8}[name]
        net = cls(input_nc, output_nc, num_downs, ngf, get_norm_layer(norm), use_dropout)
        return init_weights(net, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_channels(x, self.input_nc)
        side = 2 ** self.num_downs
        height, width = x.shape[-2:]
        if height % side or width % side or height < side or width < side:
            raise ValueError(f'unet_{side} needs height and width that are multiples of {side} '
                             f'({side}, {2 * side}, ...); got {height}x{width}: resize or crop the input '
                             '(--load_size / --crop_size)')
        return self.model(x)
