"""The R50+ViT-B/16 hybrid of Dosovitskiy et al. (2021) as timm builds it, and its official ImageNet-21k
weight file ``R50+ViT-B_16.npz`` read by timm's loader. TransUNet (its whole encoder) and ResViT (the patch
embedding, position embeddings and transformer of its ART blocks) are built on it.

The hybrid: a ResNetV2 (GroupNorm, weight-standardised convs) with 3 stages of (3, 4, 9) bottleneck units, stem
width 64, stage widths 256, 512, 1024 (output stride 16), then a 1x1 patch embedding to 768 channels and 12
pre-norm transformer blocks (12 heads, MLP 3072, LayerNorm eps 1e-6).

timm's parts, set to compute what TransUNet's official ResNetV2 (networks/vit_seg_modeling_resnet_skip.py)
computes from the same weights: symmetric padding (3 on the 7x7 root conv, 1 on the 3x3 convs) instead of timm's
TF-'same' padding, a 3x3 stride-2 max-pool without padding (at 256 the stage-1 map is 63x63; TransUNet zero-pads
its skip to 64), weight standardisation with eps 1e-5, GroupNorm (32 groups) with eps 1e-6 and the projection
shortcut's norm with one group per channel (eps 1e-5), norm weights starting at 1 (PyTorch's default); dropout 0.1
on the embeddings and in the MLPs, none after the attention projection (attention_dropout_rate 0).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from timm.layers import GroupNormAct, HybridEmbed, StdConv2d
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer, _load_weights

from util.parser_flags import add_flag

from models.generators.base import int_tuple

OFFICIAL_FILE = 'R50+ViT-B_16.npz'
DOWNLOAD_URL = 'https://storage.googleapis.com/vit_models/imagenet21k/R50%2BViT-B_16.npz'
FLAG = '--pretrained_vit'


@dataclass(frozen=True)
class HybridConfig:
    """Shape of an R50+ViT hybrid: transformer width/depth/heads, ResNet units per stage and stem width
    (stage widths 4x, 8x and 16x the stem width; GroupNorm has 32 groups, so the stem width is >= 32)."""
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    r50_layers: tuple[int, ...] = (3, 4, 9)
    r50_width: int = 64

    @property
    def feature_channels(self) -> int:
        """Channels of the ResNet's 1/16 output, the patch embedding's input (1024)."""
        return 16 * self.r50_width


def add_hybrid_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--pretrained_vit, plus hidden flags that shrink the hybrid (tests; such a network is random only)."""
    add_flag(parser, FLAG, type=str, default=None,
             help=f'official ImageNet-21k {OFFICIAL_FILE} for the R50+ViT-B/16 parts; without it they are randomly '
                  'initialised and results will not match the paper')
    add_flag(parser, '--vit_dim', type=int, default=768, help=argparse.SUPPRESS)
    add_flag(parser, '--vit_depth', type=int, default=12, help=argparse.SUPPRESS)
    add_flag(parser, '--vit_heads', type=int, default=12, help=argparse.SUPPRESS)
    add_flag(parser, '--r50_layers', type=str, default='3,4,9', help=argparse.SUPPRESS)
    add_flag(parser, '--r50_width', type=int, default=64, help=argparse.SUPPRESS)
    return parser


def hybrid_config(opt: argparse.Namespace) -> HybridConfig:
    config = HybridConfig(opt.vit_dim, opt.vit_depth, opt.vit_heads, int_tuple(opt.r50_layers), opt.r50_width)
    if config.r50_width < 32 or config.r50_width % 32:
        raise ValueError(f'the ResNet stem width must be a multiple of 32 (GroupNorm has 32 groups); '
                         f'got {config.r50_width}')
    if config.embed_dim % config.num_heads:
        raise ValueError(f'ViT width {config.embed_dim} is not divisible by {config.num_heads} heads')
    return config


def build_r50(config: HybridConfig, in_chans: int) -> ResNetV2:
    """timm's ResNetV2 computing as TransUNet's official R50 (see the module docstring): (N, C, S, S) -> root
    (stem.conv, stem.norm: S/2), stem.pool (S/4 - 1), stages (S/4 - 1, S/8, S/16)."""
    backbone = ResNetV2(layers=config.r50_layers, channels=tuple(config.r50_width * m for m in (4, 8, 16)),
                        stem_chs=config.r50_width, num_classes=0, global_pool='', in_chans=in_chans, preact=False,
                        stem_type='', conv_layer=partial(StdConv2d, eps=1e-5),
                        norm_layer=partial(GroupNormAct, num_groups=32, eps=1e-6), zero_init_last=False)
    backbone.stem.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
    for stage in backbone.stages:
        for block in stage.blocks:
            if block.downsample is not None:                 # official gn_proj: nn.GroupNorm(cout, cout)
                c = block.downsample.conv.out_channels
                block.downsample.norm = GroupNormAct(c, num_groups=c, eps=1e-5, apply_act=False)
    return backbone


def build_hybrid_vit(config: HybridConfig, img_size: int, in_chans: int, class_token: bool = False,
                     drop_rate: float = 0.1) -> VisionTransformer:
    """timm's R50+ViT hybrid for ``img_size`` x ``img_size`` input (a multiple of 16), without a head.

    class_token=False gives TransUNet's token sequence (one token per 1/16 position); the official file has a
    class token, which ``load_official_npz`` drops. ``drop_rate``: embedding and MLP dropout (the attention
    projection has none, as officially)."""
    vit = VisionTransformer(img_size=img_size, patch_size=1, in_chans=in_chans, num_classes=0, global_pool='',
                            embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
                            class_token=class_token, pos_drop_rate=drop_rate, proj_drop_rate=drop_rate,
                            embed_layer=partial(HybridEmbed, backbone=build_r50(config, in_chans)))
    for block in vit.blocks:
        block.attn.proj_drop = nn.Identity()
    return vit


def _count_indices(keys: list[str], prefix: str) -> int:
    """1 + the largest integer right after ``prefix`` in ``keys`` (0 when none)."""
    found = {int(k[len(prefix):].split('/')[0]) for k in keys if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def check_npz_shape(path: str, config: HybridConfig) -> None:
    """ValueError naming the file when its transformer depth or ResNet units differ from ``config`` (timm's
    loader would silently skip extra blocks)."""
    with np.load(path, allow_pickle=False) as w:
        keys = list(w.files)
    depth = _count_indices(keys, 'Transformer/encoderblock_')
    units = tuple(_count_indices(keys, f"block{i + 1}/unit") - 1 for i in range(len(config.r50_layers)))
    if depth != config.depth or units != config.r50_layers:
        raise ValueError(f'{FLAG} {path}: holds a hybrid with {depth} transformer blocks and ResNet units {units}; '
                         f'this generator has {config.depth} blocks and units {config.r50_layers} '
                         f'(expected the official {OFFICIAL_FILE})')


def load_official_npz(path: str, config: HybridConfig, img_size: int, in_chans: int) -> dict[str, torch.Tensor]:
    """The weights of the official ``R50+ViT-B_16.npz`` as the state dict of ``build_hybrid_vit(config,
    img_size, in_chans, class_token=False)``: read by timm's loader (JAX layout, position embeddings resized
    from 14x14 to img_size/16, the stem summed over RGB for 1-channel input), the class token dropped.

    FileNotFoundError (no file), ValueError (not this checkpoint, truncated, or another shape).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{FLAG} {path}: no such file (expected the official {OFFICIAL_FILE}, from '
                                f'{DOWNLOAD_URL})')
    reference = build_hybrid_vit(config, img_size, in_chans, class_token=True)
    try:
        check_npz_shape(path, config)
        with torch.no_grad():
            _load_weights(reference, path)
    except ValueError as exc:
        if str(exc).startswith(FLAG):
            raise
        raise ValueError(f'{FLAG} {path}: not a readable {OFFICIAL_FILE} ({exc})') from None
    except KeyError as exc:
        raise ValueError(f'{FLAG} {path}: not the official {OFFICIAL_FILE}: it lacks an array '
                         f'({exc.args[0]})') from None
    except RuntimeError as exc:
        raise ValueError(f'{FLAG} {path}: a tensor has the wrong shape for this generator: '
                         f'{str(exc).splitlines()[0]}') from None
    except Exception as exc:  # a damaged archive raises zipfile/zlib errors of several kinds
        raise ValueError(f'{FLAG} {path}: cannot be read as an .npz archive ({type(exc).__name__}: {exc})') from None
    state = reference.state_dict()
    del state['cls_token']
    state['pos_embed'] = state['pos_embed'][:, 1:]
    return state
