"""TCGAN (Li et al., "TCGAN: a transformer-enhanced GAN for PET synthetic CT", Biomed. Opt. Express 13(11),
2022; code github.com/jinxiqinghuan/TCGAN, TransGeneratorUNetV4) as ``--netG tcgan``: a TransGAN-style
transformer generator in series with a U-Net, the input added back between them (the paper's Fig. 1).

    x (N, C, S, S), S a multiple of 256
      transformer branch:
      -> three stride-2 4x4 convs (InstanceNorm, LeakyReLU) to 16, 16, 3 channels (S/8), flattened
      -> linear to 1024, linear to (S/32)^2 tokens of width D = 1024 (+ position embeddings)
      -> 5 transformer blocks; pixel shuffle x2 (D/4) + position embeddings; 4 blocks; pixel shuffle x2
         (D/16) + position embeddings; 2 blocks   (4 heads, MLP ratio 4, dropout 0.2)
      -> 1x1 conv to 3, three transposed-conv steps back to S with skips from the convs and x, 3x3 conv to C: t
      U-Net on (t + x) / 2: eight stride-2 4x4 convs (64, 128, 256, 512 x5; InstanceNorm, LeakyReLU, dropout 0.5
      from the fourth), seven transposed-conv steps with skips (dropout 0.5 on the first four), x2 upsampling,
      4x4 conv to output_nc, tanh

About 191 M parameters at 256x256 with the published D = 1024 (the U-Net 54 M; the linear layer to 64 tokens of
width 1024 alone is 67 M). TCGAN's own losses are not part of the generator; in the MRNet
paper's cGAN it trains with the shared losses (TCGAN's own train.py uses an LSGAN loss plus SmoothL1 x
lambda_pixel). ``--ngf`` sets the U-Net width (64 as published); the published
InstanceNorm and dropout are fixed. ``--init_type`` initialises the convolutions only, as the official
weights_init_normal does (its Linear layers keep PyTorch's default). There are no pretrained weights.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from util.parser_flags import add_flag

from ..layers import init_weights
from .base import Generator, check_built_size, check_size, int_tuple

N_DOWN = 8
HEADS = 4
MLP_RATIO = 4
DROPOUT = 0.2
HIDDEN = 1024       # width of the linear layer between the convs and the tokens


class Down(nn.Module):
    """4x4 stride-2 conv (no bias), InstanceNorm (optional), LeakyReLU 0.2, dropout (optional)."""

    def __init__(self, in_nc: int, out_nc: int, normalize: bool = True, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_nc, out_nc, 4, 2, 1, bias=False)]
        layers += [nn.InstanceNorm2d(out_nc)] if normalize else []
        layers += [nn.LeakyReLU(0.2)] + ([nn.Dropout(dropout)] if dropout else [])
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Up(nn.Module):
    """4x4 stride-2 transposed conv (no bias), InstanceNorm, ReLU, dropout (optional), then concatenation
    with the skip: (N, in_nc, h, w), (N, k, 2h, 2w) -> (N, out_nc + k, 2h, 2w)."""

    def __init__(self, in_nc: int, out_nc: int, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_nc, out_nc, 4, 2, 1, bias=False), nn.InstanceNorm2d(out_nc),
                                   nn.ReLU(True)]
        self.model = nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x), skip], 1)


class Attention(nn.Module):
    """TransGAN's multi-head self-attention: bias-free qkv, logits scaled by 1/sqrt(width) (not per head)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           scale=dim ** -0.5)
        return self.out(y.transpose(1, 2).reshape(n, length, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU and output dropout."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def pixel_shuffle_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(N, side^2, D) -> (N, (2 side)^2, D/4): tokens as a side x side map, pixel-shuffled x2."""
    n, _, d = tokens.shape
    grid = F.pixel_shuffle(tokens.transpose(1, 2).reshape(n, d, side, side), 2)
    return grid.flatten(2).transpose(1, 2)


class TransformerBranch(nn.Module):
    """(N, C, S, S) -> (N, C, S, S): the TransGAN-style generator in front of TCGAN's U-Net."""

    def __init__(self, channels: int, img_size: int, dim: int, depths: tuple[int, int, int]):
        super().__init__()
        self.side = img_size // 32
        self.dim = dim
        self.down = nn.ModuleList([Down(channels, 16), Down(16, 16), Down(16, 3)])
        self.linear = nn.Linear(3 * (img_size // 8) ** 2, HIDDEN)
        self.mlp = nn.Linear(HIDDEN, self.side ** 2 * dim)
        self.pos = nn.ParameterList(nn.Parameter(torch.zeros(1, (self.side * 2 ** i) ** 2, dim // 4 ** i))
                                    for i in range(3))
        self.stages = nn.ModuleList(nn.Sequential(*(TransformerBlock(dim // 4 ** i, HEADS, DROPOUT)
                                                    for _ in range(depth))) for i, depth in enumerate(depths))
        self.to_image = nn.Conv2d(dim // 16, 3, 1)
        self.up = nn.ModuleList([Up(3, 16), Up(32, 16), Up(32, channels)])
        self.out = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for down in self.down:
            skips.append(down(skips[-1]))
        tokens = self.mlp(self.linear(skips[-1].flatten(1))).view(x.shape[0], self.side ** 2, self.dim)
        side = self.side
        for i, (pos, stage) in enumerate(zip(self.pos, self.stages)):
            if i:
                tokens, side = pixel_shuffle_tokens(tokens, side), side * 2
            tokens = stage(tokens + pos)
        y = self.to_image(tokens.transpose(1, 2).reshape(x.shape[0], -1, side, side))
        for up, skip in zip(self.up, (skips[2], skips[1], skips[0])):
            y = up(y, skip)
        return self.out(y)


class TCGAN(Generator):
    """(N, input_nc, S, S) -> (N, output_nc, S, S) in [-1, 1], S = the --crop_size it was built for."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_flag(parser, '--tcgan_dim', type=int, default=1024, help=argparse.SUPPRESS)
        add_flag(parser, '--tcgan_depths', type=str, default='5,4,2', help=argparse.SUPPRESS)
        return parser

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, img_size: int = 256, dim: int = 1024,
                 depths: tuple[int, ...] = (5, 4, 2)):
        check_size('tcgan', img_size, 2 ** N_DOWN, 'its U-Net has eight stride-2 levels')
        if dim % (16 * HEADS) or len(depths) != 3:
            raise ValueError(f'tcgan needs a token width divisible by {16 * HEADS} and three depths; '
                             f'got {dim} and {depths}')
        super().__init__()
        self.input_nc, self.img_size = input_nc, img_size
        self.transformer = TransformerBranch(input_nc, img_size, dim, tuple(depths))
        widths = [ngf, 2 * ngf, 4 * ngf] + [8 * ngf] * 5
        self.downs = nn.ModuleList(
            Down(c_in, c_out, normalize=0 < i < N_DOWN - 1, dropout=0.5 if i >= 3 else 0.0)
            for i, (c_in, c_out) in enumerate(zip([input_nc] + widths[:-1], widths)))
        ups = []
        for i in range(N_DOWN - 1):                      # decoder level i meets encoder output 6 - i
            c_in = widths[-1] if i == 0 else 2 * widths[N_DOWN - 1 - i]
            ups.append(Up(c_in, widths[N_DOWN - 2 - i], dropout=0.5 if i < 4 else 0.0))
        self.ups = nn.ModuleList(ups)
        self.final = nn.Sequential(nn.Upsample(scale_factor=2), nn.ZeroPad2d((1, 0, 1, 0)),
                                   nn.Conv2d(2 * ngf, output_nc, 4, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_built_size(x, self.input_nc, self.img_size, 'tcgan')
        y = (self.transformer(x) + x) / 2
        skips = []
        for down in self.downs:
            y = down(y)
            skips.append(y)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            y = up(y, skip)
        return self.final(y)

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> TCGAN:
        net = cls(input_nc, output_nc, ngf, opt.crop_size, opt.tcgan_dim, int_tuple(opt.tcgan_depths))
        for module in net.modules():        # the official weights_init_normal touches convolutions only: the
            if isinstance(module, nn.modules.conv._ConvNd):      # Linear layers keep PyTorch's initialisation
                init_weights(module, init_type, init_gain)
        return net
