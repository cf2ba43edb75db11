"""The Segment Anything (SAM) image encoder as MRNet, the SAM feature cache and predict use it: its flags, the
official checkpoint's weights (any input size, position tables resized on load), fused attention and the
precision it runs in.

    x (N, 1 or 3, H, W) in [-1, 1] -> SamFeatureEncoder -> F (N, 256, S/16, S/16), S = --sam_input_size

segment_anything builds the ViT (``ImageEncoderViT``) and defines the checkpoint format; its attention runs
through scaled_dot_product_attention (models/encoders/sam_attention.py).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT

from util.checkpoint import load_torch_file
from util.distributed import is_main_process
from util.parser_flags import add_flag, has_option
from util.util import file_sha256

from models.layers import resize_bilinear
from models.encoders.sam_attention import use_sdpa_attention

SAM_PATCH_SIZE = 16
SAM_WINDOW_SIZE = 14
SAM_OUT_CHANS = 256
SAM_PRETRAIN_SIZE = 1024
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
SAM_RANDOM_INIT_SEED = 0  # a SAM without --sam_checkpoint is the same in every run (train and test)
SAM_ENCODER_PREFIX = 'image_encoder.'
SAM_PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass(frozen=True)
class SamEncoderConfig:
    """Shape of a SAM ViT image encoder (segment_anything's build_sam parameters)."""
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


SAM_ENCODERS = {
    'vit_b': SamEncoderConfig('vit_b', 768, 12, 12, (2, 5, 8, 11)),
    'vit_l': SamEncoderConfig('vit_l', 1024, 24, 16, (5, 11, 17, 23)),
    'vit_h': SamEncoderConfig('vit_h', 1280, 32, 16, (7, 15, 23, 31)),
}
SAM_OFFICIAL_FILES = {'vit_b': 'sam_vit_b_01ec64.pth', 'vit_l': 'sam_vit_l_0b3195.pth', 'vit_h': 'sam_vit_h_4b8939.pth'}
SAM_DOWNLOAD_URL = 'https://dl.fbaipublicfiles.com/segment_anything/'


# ----------------------------------------------------------------------------- options

def add_sam_encoder_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of the SAM image encoder (weights, input size, precision, fine-tuning); adding twice is a no-op.

    The --sam_embed_dim/--sam_depth/--sam_num_heads/--sam_global_attn_indexes flags are hidden:
    they override the --sam_model_type shape (tests and smoke runs use a tiny ViT; such an encoder
    can only be randomly initialised).
    """
    if has_option(parser, '--sam_model_type'):
        return parser
    parser.add_argument('--sam_model_type', type=str, default='vit_b', choices=sorted(SAM_ENCODERS),
                        help='SAM image encoder (vit_b, vit_l or vit_h)')
    parser.add_argument('--sam_checkpoint', type=str, default=None,
                        help=f'official SAM checkpoint, e.g. {SAM_OFFICIAL_FILES["vit_b"]} (only its image_encoder.* '
                             'weights are used); without it SAM is randomly initialised and results will not match '
                             'the paper')
    parser.add_argument('--sam_input_size', type=int, default=SAM_PRETRAIN_SIZE,
                        help=f'side of the image SAM sees (a multiple of {SAM_PATCH_SIZE}; SAM was trained at '
                             f'{SAM_PRETRAIN_SIZE}, smaller is much cheaper; position embeddings are resized on load)')
    parser.add_argument('--sam_finetune', action='store_true',
                        help='train the SAM encoder too (default: frozen, not saved in our checkpoints)')
    parser.add_argument('--sam_precision', default='auto', choices=['auto', *SAM_PRECISIONS],
                        help='precision SAM runs in: auto = bf16 on GPUs that support it, fp16 on other GPUs, fp32 '
                             'on the CPU; recorded in checkpoints (a run in another precision than training is '
                             'warned: its SAM features differ slightly)')
    # training's --compile (models/amp.py), when there, covers SAM too
    add_flag(parser, '--compile', action='store_true',
             help='torch.compile the SAM image encoder (worth it on GPUs for long runs; the first batches are slow '
                  'while it compiles)')
    parser.add_argument('--sam_embed_dim', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--sam_depth', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--sam_num_heads', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--sam_global_attn_indexes', type=str, default=None, help=argparse.SUPPRESS)
    return parser


def sam_encoder_config(opt: argparse.Namespace) -> SamEncoderConfig:
    """The encoder shape for --sam_model_type, with the hidden overrides applied (then named 'custom')."""
    base = SAM_ENCODERS[opt.sam_model_type]
    indexes = opt.sam_global_attn_indexes
    if isinstance(indexes, str):
        indexes = tuple(int(i) for i in indexes.split(',') if i.strip())
    overrides = {'embed_dim': opt.sam_embed_dim, 'depth': opt.sam_depth, 'num_heads': opt.sam_num_heads,
                 'global_attn_indexes': indexes}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return base
    fields = {**vars(base), **overrides, 'name': 'custom'}
    fields['global_attn_indexes'] = tuple(fields['global_attn_indexes'])
    return SamEncoderConfig(**fields)


# ----------------------------------------------------------------------------- weights

def build_image_encoder(config: SamEncoderConfig, img_size: int) -> ImageEncoderViT:
    """segment_anything's ImageEncoderViT as build_sam makes it, but for ``img_size`` x ``img_size`` input.

    Output: (N, 256, img_size/16, img_size/16).
    """
    return ImageEncoderViT(
        img_size=img_size, patch_size=SAM_PATCH_SIZE, in_chans=3, embed_dim=config.embed_dim, depth=config.depth,
        num_heads=config.num_heads, mlp_ratio=4.0, out_chans=SAM_OUT_CHANS, qkv_bias=True,
        norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        window_size=SAM_WINDOW_SIZE, global_attn_indexes=config.global_attn_indexes)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, G, G, C) absolute position embedding -> (1, grid[0], grid[1], C), bicubic (antialiased when shrinking)."""
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2).float(), size=grid, mode='bicubic',
                            align_corners=False, antialias=True)
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype)


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """(L, head_dim) relative position table -> (length, head_dim), linear along L.

    The same interpolation segment_anything's get_rel_pos applies at run time when a table does
    not fit its attention size, so loading resized tables equals running with the 1024 ones.
    """
    resized = F.interpolate(rel_pos.t().unsqueeze(0).float(), size=length, mode='linear', align_corners=False)
    return resized[0].t().to(rel_pos.dtype)


def read_sam_encoder_state(path: str) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` weights of an official SAM checkpoint, prefix removed (other keys ignored).

    Raises FileNotFoundError (no file), RuntimeError (not loadable) or ValueError (not a SAM checkpoint).
    """
    state = load_torch_file(path, f'--sam_checkpoint {path}', f'--sam_checkpoint {path}: no such file (expected an '
                            f'official SAM checkpoint such as {SAM_OFFICIAL_FILES["vit_b"]}, from {SAM_DOWNLOAD_URL})')
    if not isinstance(state, Mapping) or not any(str(k).startswith(SAM_ENCODER_PREFIX) for k in state):
        raise ValueError(f'{path} is not a SAM checkpoint (no {SAM_ENCODER_PREFIX}* keys); expected the official file '
                         f'such as {SAM_OFFICIAL_FILES["vit_b"]}')
    return {k[len(SAM_ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(SAM_ENCODER_PREFIX)}


def describe_encoder_state(state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(embed_dim, number of blocks) of an image-encoder state dict."""
    embed_dim = int(state['patch_embed.proj.weight'].shape[0])
    blocks = {int(k.split('.')[1]) for k in state if k.startswith('blocks.')}
    return embed_dim, (max(blocks) + 1 if blocks else 0)


def check_encoder_type(state: Mapping[str, torch.Tensor], config: SamEncoderConfig, path: str,
                       model_type: str) -> None:
    """ValueError when the checkpoint's encoder is not the one --sam_model_type asks for."""
    if 'patch_embed.proj.weight' not in state:
        raise ValueError(f'{path} is not a SAM checkpoint (no {SAM_ENCODER_PREFIX}patch_embed.proj.weight)')
    embed_dim, depth = describe_encoder_state(state)
    if (embed_dim, depth) == (config.embed_dim, config.depth):
        return
    found = next((f'a {c.name}' for c in SAM_ENCODERS.values() if (c.embed_dim, c.depth) == (embed_dim, depth)),
                 'an unrecognised')
    raise ValueError(f'checkpoint {path} holds {found} image encoder (embed_dim {embed_dim}, {depth} blocks); '
                     f'--sam_model_type {model_type} expects embed_dim {config.embed_dim}, {config.depth} blocks')


def fit_encoder_state(state: Mapping[str, torch.Tensor], encoder: ImageEncoderViT) -> dict[str, torch.Tensor]:
    """Resize pos_embed and the relative-position tables of ``state`` to ``encoder``'s input size.

    pos_embed (1, 64, 64, C) -> (1, S/16, S/16, C); each global block's rel_pos_h/w (127, head_dim)
    -> (2*S/16 - 1, head_dim). Window blocks (27 rows for window 14) are unchanged.
    """
    target = encoder.state_dict()
    fitted = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or value.shape == want.shape:
            continue
        if key == 'pos_embed' and value.dim() == 4 and value.shape[-1] == want.shape[-1]:
            fitted[key] = resize_pos_embed(value, tuple(want.shape[1:3]))
        elif key.endswith(('rel_pos_h', 'rel_pos_w')) and value.dim() == 2 and value.shape[1] == want.shape[1]:
            fitted[key] = resize_rel_pos(value, want.shape[0])
    return fitted


def load_sam_encoder(encoder: ImageEncoderViT, path: str, config: SamEncoderConfig, model_type: str) -> None:
    """Load an official SAM checkpoint's image encoder into ``encoder`` (any input size), strictly."""
    state = read_sam_encoder_state(path)
    check_encoder_type(state, config, path, model_type)
    try:
        encoder.load_state_dict(fit_encoder_state(state, encoder), strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f'the image encoder in {path} does not fit --sam_model_type {model_type}: '
                           f'{str(exc).splitlines()[0]}') from None


_random_sam_warned = False


def warn_random_sam(model_type: str) -> None:
    """Say once per process (on the main process) that SAM is randomly initialised."""
    global _random_sam_warned
    if _random_sam_warned or not is_main_process():
        return
    _random_sam_warned = True
    name = SAM_OFFICIAL_FILES.get(model_type, SAM_OFFICIAL_FILES['vit_b'])
    print(f'WARNING: no --sam_checkpoint given: the SAM image encoder ({model_type}) is RANDOMLY INITIALISED, so '
          f'results will not match the paper. Download {SAM_DOWNLOAD_URL}{name} and pass --sam_checkpoint {name}.',
          file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the encoder

def resolve_precision(precision: str, device: torch.device) -> str:
    """'fp32', 'bf16' or 'fp16' for --sam_precision on ``device``: 'auto' is bf16 on a GPU that supports it,
    fp16 on other GPUs and fp32 on the CPU; an explicit precision is kept."""
    if precision in SAM_PRECISIONS:
        return precision
    if precision != 'auto':
        raise ValueError(f'--sam_precision must be auto, {", ".join(SAM_PRECISIONS)}; got {precision!r}')
    if device.type != 'cuda':
        return 'fp32'
    return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'


class SamFeatureEncoder(nn.Module):
    """featureSAM(x): (N, 1 or 3, H, W) in [-1, 1] -> F (N, 256, S/16, S/16), S = ``input_size``.

    The image is mapped to SAM's input: [-1, 1] -> 0..255 RGB (one channel repeated to three), then
    (x - pixel_mean) / pixel_std, then bilinear resizing to S x S (a non-square image is stretched;
    the adapters stretch the features back, so they stay aligned with the image).

    Attention runs through fused scaled_dot_product_attention (models/encoders/sam_attention.py), equal to
    segment_anything's. Frozen (default): no gradients, always in eval mode, run under
    torch.inference_mode with its weights in ``precision`` (see :func:`resolve_precision`: bf16 or fp16
    on GPUs, fp32 on the CPU by default); F is returned as an ordinary float32 tensor, a constant for
    autograd. ``finetune=True`` trains it like any other layer (fp32 weights, autocast for bf16/fp16).
    Without ``checkpoint`` the weights are segment_anything's random init under a fixed seed, so a
    test run rebuilds the same encoder that training used. ``compile`` wraps the ViT in torch.compile.
    """

    out_channels = SAM_OUT_CHANS

    def __init__(self, config: SamEncoderConfig, input_size: int = SAM_PRETRAIN_SIZE, in_channels: int = 3,
                 checkpoint: str | None = None, finetune: bool = False, model_type: str = 'vit_b',
                 precision: str = 'auto', compile: bool = False):
        super().__init__()
        if input_size < SAM_PATCH_SIZE or input_size % SAM_PATCH_SIZE:
            raise ValueError(f'--sam_input_size must be a positive multiple of {SAM_PATCH_SIZE} (e.g. 256, 512, 1024); '
                             f'got {input_size}')
        if in_channels != 1 and (in_channels < 3 or in_channels % 2 == 0):
            raise ValueError(f'SAM reads a 1-channel image, 3 channels, or an odd number of 2.5D context channels '
                             f'(--context_slices K: 2K+1); --input_nc is {in_channels}')
        resolve_precision(precision, torch.device('cpu'))  # validates the name
        self.input_size = input_size
        self.in_channels = in_channels
        self.finetune = finetune
        self.model_type = model_type
        self.config = config
        self.precision = precision
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SAM_RANDOM_INIT_SEED)
            self.image_encoder = use_sdpa_attention(build_image_encoder(config, input_size))
        self.checkpoint_name: str | None = None
        self.checkpoint_sha256: str | None = None
        if checkpoint:
            load_sam_encoder(self.image_encoder, checkpoint, config, model_type)
            self.checkpoint_name = os.path.basename(checkpoint)
            self.checkpoint_sha256 = file_sha256(checkpoint)
        else:
            warn_random_sam(model_type)
        self.register_buffer('pixel_mean', torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('pixel_std', torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        if compile:
            self.image_encoder.compile()  # in place: parameters and state-dict keys unchanged
        if not finetune:
            self.image_encoder.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> SamFeatureEncoder:
        """A frozen encoder stays in eval mode whatever its parent asks."""
        return super().train(mode and self.finetune)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def precision_on(self, device: torch.device | None = None) -> str:
        """The precision SAM runs in on ``device`` (default: where the encoder is): 'fp32', 'bf16' or 'fp16'."""
        return resolve_precision(self.precision, device or self.device)

    def cache_identity(self, device: torch.device | None = None) -> dict:
        """Everything that decides F for a given image, for feature caches (data/sam_cache.py): the weights
        (file sha256, or the seeded random init), the encoder's shape, the input size and the precision."""
        return {'sam_sha256': self.checkpoint_sha256 or f'random-init-seed-{SAM_RANDOM_INIT_SEED}',
                'model_type': self.model_type, 'config': [self.config.embed_dim, self.config.depth,
                                                          self.config.num_heads, list(self.config.global_attn_indexes)],
                'input_size': self.input_size, 'precision': self.precision_on(device)}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, 3, S, S) normalised as SAM expects. C = 1 is repeated to RGB; C = 3 is
        RGB (the grey slice repeated, or with --context_slices 1 the slices i-1, i, i+1); a 2.5D stack of C = 2K+1
        > 3 slices gives SAM its three central channels, the slice and its nearest neighbours i-1, i+1 (the
        closest to the grey image SAM's filters expect; the U-Net still sees all 2K+1)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] > 3:
            centre = x.shape[1] // 2
            x = x[:, centre - 1:centre + 2]
        rgb = (x + 1.0) * 127.5
        return resize_bilinear((rgb - self.pixel_mean) / self.pixel_std, (self.input_size, self.input_size))

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) (N, 256, S/16, S/16) float32 with autograd through the encoder to ``x`` (the SAM perceptual loss,
        models/losses/sam_perceptual.py): the weights stay frozen (no gradient reaches them) unless fine-tuned. Runs in
        autocast at the run's precision, the weights in float32."""
        dtype = SAM_PRECISIONS[self.precision_on(x.device)]
        if next(self.image_encoder.parameters()).dtype != torch.float32:
            self.image_encoder.float()
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return self.image_encoder(self.preprocess(x)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = SAM_PRECISIONS[self.precision_on(x.device)]
        if self.finetune:
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
                return self.image_encoder(self.preprocess(x)).float()
        if next(self.image_encoder.parameters()).dtype != dtype:
            self.image_encoder.to(dtype)      # frozen weights held in the run's precision (no casts per op)
        # --sam_precision, not the training loop's --amp autocast
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            feature = self.image_encoder(self.preprocess(x).to(dtype))
        return feature.to(torch.float32, copy=True)  # a copy made outside inference mode is a normal tensor
