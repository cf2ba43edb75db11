"""Swin-Unet (Cao et al. 2022, github.com/HuCaoFighting/Swin-Unet) as an image-to-image generator,
``--netG swin_unet``.

    x (N, C, S, S), S a multiple of 32 x window
      -> Swin-T encoder (timm): 4x4 patch embedding to 96 channels, stages of depths 2-2-2-2 with 3, 6, 12, 24
         heads at S/4, S/8, S/16, S/32 (patch merging between them), LayerNorm
      -> symmetric decoder: patch expanding (x2, half the channels), concatenation with the encoder's input to the
         mirrored stage, a linear layer back to its width, Swin blocks of the mirrored depth and heads, ...
      -> LayerNorm, x4 patch expanding, 1x1 convolution to output_nc, tanh   (the segmentation head replaced)

Window 8 at 256x256 (``--swin_window``; Swin-T's 7 does not divide 64). About 27 M parameters at 256x256.
``--pretrained_swin`` reads the official ImageNet ``swin_tiny_patch4_window7_224.pth`` (its 'model' key) with
timm's checkpoint filter, which resizes the relative-position tables to the window (the patch embedding is summed
over RGB for 1-channel input); as in the official code the
decoder's Swin blocks start from the mirrored encoder stage's weights. ``--norm``, ``--ngf`` and
``--no_dropout`` are not used (LayerNorm and stochastic depth 0.2, as the official training config).
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping

import torch
import torch.nn as nn
from timm.models import adapt_input_conv
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, checkpoint_filter_fn

from util.checkpoint import load_torch_file
from util.parser_flags import add_flag

from .base import Generator, check_built_size, check_size, int_tuple, warn_random_init

OFFICIAL_FILE = 'swin_tiny_patch4_window7_224.pth'
DOWNLOAD_URL = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/' + OFFICIAL_FILE
FLAG = '--pretrained_swin'
PATCH = 4
DROP_PATH = 0.2      # the official training config (swin_tiny_patch4_window7_224_lite.yaml)


class PatchExpand(nn.Module):
    """(N, H, W, C) -> (N, s*H, s*W, C') : a bias-free linear layer to s*s*C' channels, each pixel's channels
    spread over an s x s block, LayerNorm. s=2: C' = C/2 (decoder stages); s=4: C' = C (the final x4)."""

    def __init__(self, dim: int, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.out_dim = dim // 2 if scale == 2 else dim
        self.expand = nn.Linear(dim, scale * scale * self.out_dim, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(n, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(n, h * s, w * s, self.out_dim))


class UpStage(nn.Module):
    """Swin blocks (regular and shifted windows alternating) at one resolution, then x2 patch expanding
    (except in the last stage). (N, H, W, C) -> (N, 2H, 2W, C/2), or (N, H, W, C) in the last stage."""

    def __init__(self, dim: int, resolution: int, depth: int, heads: int, window: int, drop_path: list[float],
                 expand: bool):
        super().__init__()
        self.blocks = nn.Sequential(*(
            SwinTransformerBlock(dim, (resolution, resolution), num_heads=heads, window_size=window,
                                 shift_size=0 if i % 2 == 0 else window // 2, drop_path=drop_path[i])
            for i in range(depth)))
        self.upsample = PatchExpand(dim) if expand else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.blocks(x))


class SwinUnet(Generator):
    """(N, input_nc, S, S) -> (N, output_nc, S, S) in [-1, 1], S = the --crop_size it was built for."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_flag(parser, FLAG, type=str, default=None,
                 help=f'official ImageNet {OFFICIAL_FILE} for the Swin-T encoder (and, mirrored, the decoder); '
                      'without it swin_unet is randomly initialised and results will not match the paper')
        add_flag(parser, '--swin_window', type=int, default=8,
                 help='attention window of swin_unet (8 at 256x256; --crop_size must be a multiple of 32 x window)')
        add_flag(parser, '--swin_embed_dim', type=int, default=96, help=argparse.SUPPRESS)
        add_flag(parser, '--swin_depths', type=str, default='2,2,2,2', help=argparse.SUPPRESS)
        add_flag(parser, '--swin_heads', type=str, default='3,6,12,24', help=argparse.SUPPRESS)
        return parser

    def __init__(self, input_nc: int, output_nc: int, img_size: int = 256, window: int = 8, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 2, 2), heads: tuple[int, ...] = (3, 6, 12, 24)):
        if len(depths) != 4 or len(heads) != 4:
            raise ValueError(f'swin_unet has 4 stages; got depths {depths} and heads {heads}')
        check_size('swin_unet', img_size, 32 * window,
                   f'4x4 patches, three patch mergings and windows of {window} at the deepest stage')
        super().__init__()
        self.input_nc, self.img_size = input_nc, img_size
        self.encoder = SwinTransformer(img_size=img_size, patch_size=PATCH, in_chans=input_nc, num_classes=0,
                                       global_pool='', embed_dim=embed_dim, depths=depths, num_heads=heads,
                                       window_size=window, drop_path_rate=DROP_PATH)
        rates = [DROP_PATH * i / max(1, sum(depths) - 1) for i in range(sum(depths))]   # as timm's encoder
        grid = img_size // PATCH
        self.expand = PatchExpand(embed_dim * 8)                  # bottleneck (8C, S/32) -> (4C, S/16)
        self.concat = nn.ModuleList()
        self.up_stages = nn.ModuleList()
        for j in (1, 2, 3):                                      # mirrors encoder stage 3 - j
            i = 3 - j
            dim = embed_dim * 2 ** i
            self.concat.append(nn.Linear(2 * dim, dim))
            self.up_stages.append(UpStage(dim, grid // 2 ** i, depths[i], heads[i], window,
                                          rates[sum(depths[:i]):sum(depths[:i + 1])], expand=j < 3))
        self.norm_up = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(embed_dim, scale=PATCH)
        self.head = nn.Sequential(nn.Conv2d(embed_dim, output_nc, 1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_built_size(x, self.input_nc, self.img_size, 'swin_unet')
        y = self.encoder.patch_embed(x)                          # (N, S/4, S/4, C), channels last
        skips = []
        for stage in self.encoder.layers:                        # skip = the input of each stage's blocks
            y = stage.downsample(y)
            skips.append(y)
            y = stage.blocks(y)
        y = self.expand(self.encoder.norm(y))
        for concat, stage, skip in zip(self.concat, self.up_stages, reversed(skips[:3])):
            y = stage(concat(torch.cat([y, skip], -1)))
        y = self.final_expand(self.norm_up(y))
        return self.head(y.permute(0, 3, 1, 2))

    def load_pretrained_swin(self, path: str) -> None:
        """The encoder from the official Swin-T checkpoint (strictly; relative-position tables resized to this
        window), the decoder's blocks from the mirrored encoder stages."""
        raw = load_torch_file(path, f'{FLAG} {path}', f'{FLAG} {path}: no such file (expected the official '
                              f'{OFFICIAL_FILE}, from {DOWNLOAD_URL})')
        if not isinstance(raw, Mapping) or not isinstance(raw.get('model'), Mapping):
            raise ValueError(f"{FLAG} {path}: no 'model' state dict; expected the official {OFFICIAL_FILE}")
        weights = {k: v for k, v in raw['model'].items() if not k.startswith('head.')}
        depths = tuple(len({k.split('.')[3] for k in weights if k.startswith(f'layers.{i}.blocks.')}) for i in range(4))
        own = tuple(len(stage.blocks) for stage in self.encoder.layers)
        if depths != own:
            raise ValueError(f'{FLAG} {path}: holds a Swin with stage depths {depths}; swin_unet has {own} '
                             f'(expected the official {OFFICIAL_FILE})')
        try:
            state = checkpoint_filter_fn(weights, self.encoder)
            state['patch_embed.proj.weight'] = adapt_input_conv(self.input_nc, state['patch_embed.proj.weight'])
            self.encoder.load_state_dict(state, strict=True)
        except (RuntimeError, AttributeError, KeyError, ValueError) as exc:
            raise ValueError(f'{FLAG} {path}: does not fit the Swin-T encoder of swin_unet: '
                             f'{" ".join(str(exc).split())[:400]}') from None
        for j, stage in enumerate(self.up_stages, start=1):
            for block, source in zip(stage.blocks, self.encoder.layers[3 - j].blocks):
                block.load_state_dict(source.state_dict(), strict=True)

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> SwinUnet:
        net = cls(input_nc, output_nc, opt.crop_size, opt.swin_window, opt.swin_embed_dim,
                  int_tuple(opt.swin_depths), int_tuple(opt.swin_heads))
        net.init_decoder()
        if opt.isTrain and opt.pretrained_swin:
            net.load_pretrained_swin(opt.pretrained_swin)
        elif opt.isTrain:
            warn_random_init('Swin-T encoder of swin_unet', FLAG, OFFICIAL_FILE, DOWNLOAD_URL)
        return net

    def init_decoder(self) -> None:
        """The official initialisation of everything outside timm's encoder: linear weights truncated normal
        (std 0.02) with zero biases, LayerNorms (1, 0)."""
        for m in [self.expand, self.concat, self.up_stages, self.norm_up, self.final_expand]:
            for layer in m.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.02)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
                elif isinstance(layer, nn.LayerNorm):
                    nn.init.ones_(layer.weight)
                    nn.init.zeros_(layer.bias)
