"""TransUNet (Chen et al. 2021, github.com/Beckschen/TransUNet) as an image-to-image generator, ``--netG transunet``.

    x (N, C, S, S), S a multiple of 16
      -> R50 (ResNetV2, 3 stages): root (64, S/2) -> max-pool -> stage 1 (256, S/4 - 1, zero-padded to S/4 for
         its skip) -> stage 2 (512, S/8) -> stage 3 (1024, S/16), computed as the official R50
         (models/encoders/r50_vit.py)
      -> 1x1 patch embedding to 768 + position embeddings -> 12 ViT-B blocks -> LayerNorm   (timm's R50+ViT-B/16)
      -> cascaded upsampler: 3x3 conv to 512, then 4 blocks [x2 bilinear, concat skip, (3x3 conv, BN, ReLU) x2]
         to 256, 128, 64, 16 channels with the stage-2, stage-1 and root outputs as the three skips
      -> 3x3 conv to output_nc, tanh   (the segmentation head replaced as in ResViT's paper)

About 105 M parameters at 256x256 (the TransUNet repository's R50-ViT-B_16 network, 105.3 M, minus its head).
The encoder reads the official ``R50+ViT-B_16.npz`` (``--pretrained_vit``); the decoder starts from PyTorch's
default initialisation as in the official code. ``--norm``, ``--ngf`` and ``--no_dropout`` are not used: the
official normalisations (GroupNorm in the ResNet, LayerNorm, BatchNorm in the decoder) and dropouts (0.1 on the
embeddings and in the MLPs, 0 on attention and its projection) are.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.encoders.r50_vit import (DOWNLOAD_URL, FLAG, OFFICIAL_FILE, HybridConfig, add_hybrid_options,
                                     build_hybrid_vit, hybrid_config, load_official_npz)
from .base import Generator, check_built_size, check_size, warn_random_init


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias), BatchNorm, ReLU; keeps the spatial size."""

    def __init__(self, in_nc: int, out_nc: int):
        super().__init__(nn.Conv2d(in_nc, out_nc, 3, padding=1, bias=False), nn.BatchNorm2d(out_nc), nn.ReLU(True))


class DecoderBlock(nn.Module):
    """x2 bilinear upsampling (corners aligned), concatenation with the skip (if any), two ConvBNReLU."""

    def __init__(self, in_nc: int, out_nc: int, skip_nc: int):
        super().__init__()
        self.conv1 = ConvBNReLU(in_nc + skip_nc, out_nc)
        self.conv2 = ConvBNReLU(out_nc, out_nc)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.conv2(self.conv1(x))


class TransUNet(Generator):
    """(N, input_nc, S, S) -> (N, output_nc, S, S) in [-1, 1], S = the --crop_size it was built for."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return add_hybrid_options(parser)

    def __init__(self, input_nc: int, output_nc: int, img_size: int = 256, config: HybridConfig = HybridConfig()):
        check_size('transunet', img_size, 16, 'the ViT sees a grid of S/16 x S/16 tokens')
        super().__init__()
        self.input_nc, self.img_size, self.config = input_nc, img_size, config
        self.vit = build_hybrid_vit(config, img_size, input_nc, class_token=False)
        w = config.r50_width
        head = 8 * w                                                   # 512
        widths = (4 * w, 2 * w, w, w // 4)                             # 256, 128, 64, 16
        skips = (8 * w, 4 * w, w, 0)                                   # stage 2, stage 1, root, none
        self.conv_more = ConvBNReLU(config.embed_dim, head)
        self.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip((head, *widths[:-1]), widths, skips))
        self.head = nn.Sequential(nn.Conv2d(widths[-1], output_nc, 3, padding=1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens (N, (S/16)^2, 768) after the final LayerNorm, and the skips [stage 2, stage 1, root]."""
        backbone = self.vit.patch_embed.backbone
        root = backbone.stem.norm(backbone.stem.conv(x))
        stage1 = backbone.stages[0](backbone.stem.pool(root))          # S/4 - 1: the pool has no padding
        stage2 = backbone.stages[1](stage1)
        side = self.img_size // 4                                      # the skip zero-padded at its end, as
        skip1 = F.pad(stage1, (0, side - stage1.shape[-1], 0, side - stage1.shape[-2]))  # the official code
        features = backbone.norm(backbone.stages[2](stage2))
        tokens = self.vit.patch_embed.proj(features).flatten(2).transpose(1, 2)
        tokens = self.vit.norm(self.vit.blocks(self.vit._pos_embed(tokens)))
        return tokens, [stage2, skip1, root]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_built_size(x, self.input_nc, self.img_size, 'transunet')
        tokens, skips = self.encode(x)
        grid = self.img_size // 16
        y = self.conv_more(tokens.transpose(1, 2).reshape(x.shape[0], -1, grid, grid))
        for block, skip in zip(self.blocks, [*skips, None]):
            y = block(y, skip)
        return self.head(y)

    def load_pretrained_vit(self, path: str) -> None:
        """The encoder from the official R50+ViT-B_16.npz (strictly: every encoder tensor is set)."""
        self.vit.load_state_dict(load_official_npz(path, self.config, self.img_size, self.input_nc), strict=True)

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> TransUNet:
        net = cls(input_nc, output_nc, opt.crop_size, hybrid_config(opt))
        if opt.isTrain and opt.pretrained_vit:
            net.load_pretrained_vit(opt.pretrained_vit)
        elif opt.isTrain:
            warn_random_init('R50+ViT-B/16 encoder of transunet', FLAG, OFFICIAL_FILE, DOWNLOAD_URL)
        return net
