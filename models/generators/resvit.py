"""ResViT (Dalmaz et al. 2022, github.com/icon-lab/ResViT), ``--netG resvit``, and the parts ``--netG res_cnn``
(its CNN-only first stage, models/generators/res_cnn.py) shares.

    x (N, C, S, S), S a multiple of 16
      -> CNN encoder: 7x7 conv to 64, two stride-2 3x3 convs to 128 and 256 (BatchNorm, ReLU)      (S/4)
      -> 9 aggregated residual transformer (ART) blocks at 256 channels; in blocks 1 and 6 a transformer path
         runs beside the residual CNN: two stride-2 convs to 1024 (S/16), 1x1 patch embedding to 768 plus
         position embeddings, ONE ViT-B transformer (12 blocks, shared by both ART blocks), two transposed convs
         back to 256 channels, concatenation with the block's input and channel compression to 256; every ART
         block ends in a residual CNN block
      -> CNN decoder: two transposed convs to 128 and 64, 7x7 conv to output_nc, tanh

About 123 M parameters at 256x256 (the official network: 123.4 M). The official recipe trains in two stages:
``--netG res_cnn`` (the same network without the transformer paths) first, then ``--netG resvit
--pretrained_G <res_cnn net_G.pth> --pretrained_vit R50+ViT-B_16.npz``, which starts from the trained CNN and
the ImageNet-21k ViT-B (its patch embedding, position embeddings resized to S/16 and transformer).
``--ngf`` sets the CNN width (64 in the paper); BatchNorm and no dropout in the CNN are fixed, as published.
Like the official generator (its define_G initialises only the discriminator), both start from PyTorch's default
initialisation (the MLPs from the official Mlp's Xavier-uniform); ``--init_type`` and ``--init_gain`` are not used.
"""
from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from util.checkpoint import read_network_file
from util.parser_flags import add_flag

from ..layers import check_image_channels
from models.encoders.r50_vit import (DOWNLOAD_URL, FLAG, OFFICIAL_FILE, HybridConfig, add_hybrid_options, hybrid_config,
                       load_official_npz)
from .base import Generator, check_built_size, check_size, warn_random_init
from .resnet import ResnetBlock

TRANSFORMER_BLOCKS = (0, 5)   # ART blocks 1 and 6 hold a transformer path
N_ART = 9
DROPOUT = 0.1                 # the transformer's (ViT-B config)


def conv_bn_relu(in_nc: int, out_nc: int, **conv) -> list[nn.Module]:
    return [nn.Conv2d(in_nc, out_nc, bias=False, **conv), nn.BatchNorm2d(out_nc), nn.ReLU(True)]


def up_bn_relu(in_nc: int, out_nc: int) -> list[nn.Module]:
    """x2 transposed 3x3 convolution, BatchNorm, ReLU."""
    return [nn.ConvTranspose2d(in_nc, out_nc, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(out_nc), nn.ReLU(True)]


class ChannelCompression(nn.Module):
    """Residual block from in_nc to out_nc channels: relu(BN(conv3(relu(BN(conv3(x))))) + BN(conv1(x)))."""

    def __init__(self, in_nc: int, out_nc: int):
        super().__init__()
        self.skip = nn.Sequential(nn.Conv2d(in_nc, out_nc, 1, bias=False), nn.BatchNorm2d(out_nc))
        self.block = nn.Sequential(*conv_bn_relu(in_nc, out_nc, kernel_size=3, padding=1),
                                   nn.Conv2d(out_nc, out_nc, 3, padding=1, bias=False), nn.BatchNorm2d(out_nc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.block(x) + self.skip(x))


class ViTEncoder(nn.Module):
    """ViT-B's transformer: pre-norm blocks and the final LayerNorm; (N, L, D) -> (N, L, D). Dropout 0.1 in the
    MLPs, none after the attention projection (the official config's dropout_rate 0.1, attention_dropout_rate 0)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.blocks = nn.Sequential(*(Block(config.embed_dim, config.num_heads, mlp_ratio=4.0, qkv_bias=True,
                                            proj_drop=DROPOUT, norm_layer=partial(nn.LayerNorm, eps=1e-6))
                                      for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.embed_dim, eps=1e-6)
        for block in self.blocks:
            block.attn.proj_drop = nn.Identity()              # official attention_dropout_rate 0 (proj too)
            for fc in (block.mlp.fc1, block.mlp.fc2):         # the official Mlp's own initialisation
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(tokens))


class ARTBlock(nn.Module):
    """Aggregated residual transformer block at ``width`` channels (N, width, s, s) -> same shape.

    With ``config``: a transformer path (down to s/4 and ``config.feature_channels``, tokens through the
    transformer passed to forward, back up) concatenated with the input and compressed, then the residual CNN.
    """

    def __init__(self, width: int, config: HybridConfig | None = None, grid: int = 0):
        super().__init__()
        self.has_transformer = config is not None
        if config is not None:
            self.downsample = nn.Sequential(*conv_bn_relu(width, 2 * width, kernel_size=3, stride=2, padding=1),
                                            *conv_bn_relu(2 * width, config.feature_channels, kernel_size=3, stride=2,
                                                          padding=1))
            self.patch_embed = nn.Conv2d(config.feature_channels, config.embed_dim, 1)
            self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, config.embed_dim))
            self.pos_drop = nn.Dropout(DROPOUT)
            self.upsample = nn.Sequential(*up_bn_relu(config.embed_dim, 2 * width), *up_bn_relu(2 * width, width))
            self.cc = ChannelCompression(2 * width, width)
        self.residual_cnn = ResnetBlock(width, 'reflect', nn.BatchNorm2d, use_dropout=False, use_bias=False)

    def forward(self, x: torch.Tensor, transformer: nn.Module | None = None) -> torch.Tensor:
        if self.has_transformer:
            features = self.patch_embed(self.downsample(x))
            n, d, h, w = features.shape
            tokens = transformer(self.pos_drop(features.flatten(2).transpose(1, 2) + self.pos_embed))
            y = self.upsample(tokens.transpose(1, 2).reshape(n, d, h, w))
            x = self.cc(torch.cat([y, x], 1))
        return self.residual_cnn(x)


class ResViT(Generator):
    """(N, input_nc, S, S) -> (N, output_nc, S, S) in [-1, 1]; S = the --crop_size it was built for
    (res_cnn: any multiple of 4)."""

    transformer_blocks: tuple[int, ...] = TRANSFORMER_BLOCKS

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_hybrid_options(parser)
        add_flag(parser, '--pretrained_G', type=str, default=None,
                 help='a trained --netG res_cnn generator (<epoch>_net_G.pth) to start resvit from: the second '
                      'stage of the official two-stage recipe')
        return parser

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, img_size: int = 256,
                 config: HybridConfig = HybridConfig()):
        name = 'resvit' if self.transformer_blocks else 'res_cnn'
        check_size(name, img_size, 16 if self.transformer_blocks else 4,
                   'the transformer sees S/16 x S/16 tokens' if self.transformer_blocks else 'two stride-2 convs')
        super().__init__()
        self.input_nc, self.img_size, self.config = input_nc, img_size, config
        width = 4 * ngf
        self.encoder = nn.Sequential(nn.ReflectionPad2d(3),
                                     *conv_bn_relu(input_nc, ngf, kernel_size=7),
                                     *conv_bn_relu(ngf, 2 * ngf, kernel_size=3, stride=2, padding=1),
                                     *conv_bn_relu(2 * ngf, width, kernel_size=3, stride=2, padding=1))
        self.transformer = ViTEncoder(config) if self.transformer_blocks else None
        self.art = nn.ModuleList(ARTBlock(width, config if i in self.transformer_blocks else None, img_size // 16)
                                 for i in range(N_ART))
        self.decoder = nn.Sequential(*up_bn_relu(width, 2 * ngf), *up_bn_relu(2 * ngf, ngf), nn.ReflectionPad2d(3),
                                     nn.Conv2d(ngf, output_nc, 7), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transformer_blocks:
            check_built_size(x, self.input_nc, self.img_size, 'resvit')
        else:
            check_image_channels(x, self.input_nc)
            if x.shape[-1] % 4 or x.shape[-2] % 4:
                raise ValueError(f'--netG res_cnn needs height and width that are multiples of 4; got '
                                 f'{x.shape[-2]}x{x.shape[-1]}')
        y = self.encoder(x)
        for block in self.art:
            y = block(y, self.transformer)
        return self.decoder(y)

    def is_transformer_path(self, key: str) -> bool:
        """Whether state-dict ``key`` belongs to what res_cnn lacks (the transformer and the ART paths to it)."""
        parts = key.split('.')
        return parts[0] == 'transformer' or (parts[0] == 'art' and parts[2] != 'residual_cnn')

    def load_pretrained_generator(self, path: str) -> None:
        """Every CNN weight from a res_cnn generator file (the transformer paths keep theirs); ValueError naming
        the file when it is not a res_cnn of this width."""
        state, _, options = read_network_file(path)
        own = self.state_dict()
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
        missing = [k for k in own if k not in state and not self.is_transformer_path(k)]
        if unexpected or wrong or missing:
            trained = f'--netG {options.get("netG", "?")} --ngf {options.get("ngf", "?")}'
            raise ValueError(f'--pretrained_G {path}: not a res_cnn generator of this width (it was trained with '
                             f'{trained}): unexpected {unexpected[:3]}, wrong shape {wrong[:3]}, missing {missing[:3]}')
        self.load_state_dict(state, strict=False)

    def load_pretrained_vit(self, path: str) -> None:
        """Patch embedding, position embeddings (for both ART paths) and transformer from R50+ViT-B_16.npz."""
        state = load_official_npz(path, self.config, self.img_size, 3)
        self.transformer.load_state_dict({k: v for k, v in state.items() if k.startswith(('blocks.', 'norm.'))},
                                         strict=True)
        for i in self.transformer_blocks:
            block = self.art[i]
            block.patch_embed.load_state_dict({'weight': state['patch_embed.proj.weight'],
                                               'bias': state['patch_embed.proj.bias']}, strict=True)
            with torch.no_grad():
                block.pos_embed.copy_(state['pos_embed'])

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> ResViT:
        net = cls(input_nc, output_nc, ngf, opt.crop_size, hybrid_config(opt))   # PyTorch's init, as officially
        if not opt.isTrain:
            return net
        if opt.pretrained_vit:
            net.load_pretrained_vit(opt.pretrained_vit)
        else:
            warn_random_init('ViT-B transformer of resvit', FLAG, OFFICIAL_FILE, DOWNLOAD_URL)
        if opt.pretrained_G:
            net.load_pretrained_generator(opt.pretrained_G)
        return net
