"""The classic toolkit's ResNet generators, ``--netG resnet_6blocks`` and ``resnet_9blocks`` (Johnson et al.,
2016, as CycleGAN uses them), and the residual block that ResViT and PPT reuse.
The architecture and parameter count are the classic toolkit's for the same options.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from ..layers import NormLayer, check_image_channels, conv_bias_needed, get_norm_layer, init_weights
from .base import Generator


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-(dropout)-conv-norm(x); (N, dim, H, W) -> same shape."""

    def __init__(self, dim: int, padding_type: str, norm_layer: NormLayer, use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers += self._padded_conv(dim, padding_type, use_bias) + [norm_layer(dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    @staticmethod
    def _padded_conv(dim: int, padding_type: str, use_bias: bool) -> list[nn.Module]:
        pads = {'reflect': nn.ReflectionPad2d, 'replicate': nn.ReplicationPad2d}
        if padding_type == 'zero':
            return [nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=use_bias)]
        if padding_type not in pads:
            raise ValueError(f"padding {padding_type!r} is not supported; choose one of 'reflect', 'replicate', 'zero'")
        return [pads[padding_type](1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class Resnet(Generator):
    """Johnson-style ResNet generator: 7x7 conv, 2 stride-2 downsamplings, ``n_blocks``
    residual blocks at 1/4 resolution, 2 transposed-conv upsamplings, 7x7 conv, tanh.

    (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; H and W should be multiples of 4.
    """

    names = ('resnet_6blocks', 'resnet_9blocks')

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm_layer: NormLayer = nn.BatchNorm2d,
                 use_dropout: bool = False, n_blocks: int = 6, padding_type: str = 'reflect'):
        if n_blocks < 0:
            raise ValueError(f'n_blocks must be >= 0, got {n_blocks}')
        super().__init__()
        self.input_nc = input_nc
        use_bias = conv_bias_needed(norm_layer)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3),
                                   nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                                   norm_layer(ngf), nn.ReLU(True)]
        n_downsampling = 2
        for i in range(n_downsampling):
            width = ngf * 2 ** i
            layers += [nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                       norm_layer(width * 2), nn.ReLU(True)]
        width = ngf * 2 ** n_downsampling
        layers += [ResnetBlock(width, padding_type, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            width = ngf * 2 ** (n_downsampling - i)
            layers += [nn.ConvTranspose2d(width, width // 2, kernel_size=3, stride=2, padding=1, output_padding=1,
                                          bias=use_bias),
                       norm_layer(width // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> Resnet:
        n_blocks = {'resnet_6blocks': 6, 'resnet_9blocks': 9}[name]
        net = cls(input_nc, output_nc, ngf, get_norm_layer(norm), use_dropout, n_blocks=n_blocks)
        return init_weights(net, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_channels(x, self.input_nc)
        return self.model(x)
