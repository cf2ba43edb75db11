"""The MRNet generator, netG 'sam_unet' (paper section III, eqs. 1-5), and its parts.

    x (N, C, H, W) in [-1, 1], H and W multiples of 256
      -> SamFeatureEncoder: frozen SAM ViT image encoder F (N, 256, S/16, S/16), S = --sam_input_size
      -> 8 FusedStages E_1..E_8 (eq. 1-2): E_i = T_i(e_i (+) A_i(F)), side H/2^i
      -> SoftClamp at the bottleneck (eq. 3)
      -> LightDecoder: [upsampled features (+) E_i] -> ConvT -> norm -> ReLU, ..., tanh -> y_0
      -> MaskModule (eq. 4-5): M_k = sigmoid(psi_k(y_{k-1})), y_k = y_{k-1} * M_k -> y_n in [-1, 1]

Where the paper leaves a choice open, the class that makes it says which and why; the tests
in tests/test_sam_unet.py pin each choice.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT

from util.distributed import is_main_process

from .networks import NormLayer, check_image_channels, conv_bias_needed, get_norm_layer, init_weights
from .sam_attention import use_sdpa_attention

# ----------------------------------------------------------------------------- SAM constants

SAM_PATCH_SIZE = 16
SAM_WINDOW_SIZE = 14
SAM_OUT_CHANS = 256
SAM_PRETRAIN_SIZE = 1024
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
SAM_RANDOM_INIT_SEED = 0  # a SAM without --sam_checkpoint is the same in every run (train and test)
SAM_ENCODER_PREFIX = 'image_encoder.'
SAM_PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}

N_STAGES = 8
MIN_SIDE = 2 ** N_STAGES  # 256: the bottleneck is 1x1
SOFTCLAMP_ALPHA = 0.001


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

def add_sam_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of the 'sam_unet' generator (SAM encoder, masks, ablations); adding twice is a no-op.

    The --sam_embed_dim/--sam_depth/--sam_num_heads/--sam_global_attn_indexes flags are hidden:
    they override the --sam_model_type shape (tests and smoke runs use a tiny ViT; such an encoder
    can only be randomly initialised).
    """
    if '--sam_model_type' in parser._option_string_actions:
        return parser
    parser.add_argument('--sam_model_type', type=str, default='vit_b', choices=sorted(SAM_ENCODERS),
                        help='SAM image encoder of the sam_unet generator')
    parser.add_argument('--sam_checkpoint', type=str, default=None,
                        help=f'official SAM checkpoint, e.g. {SAM_OFFICIAL_FILES["vit_b"]} (only its image_encoder.* '
                             'weights are used); without it SAM is randomly initialised and results will not match '
                             'the paper')
    parser.add_argument('--sam_input_size', type=int, default=SAM_PRETRAIN_SIZE,
                        help='side of the image SAM sees (a multiple of 16; SAM was trained at 1024, smaller is '
                             'much cheaper; position embeddings are resized on load)')
    parser.add_argument('--sam_finetune', action='store_true',
                        help='train the SAM encoder too (default: frozen, not saved in our checkpoints)')
    parser.add_argument('--sam_precision', default='auto', choices=['auto', *SAM_PRECISIONS],
                        help='precision SAM runs in: auto = bf16 on GPUs that support it, fp16 on other GPUs, fp32 '
                             'on the CPU; recorded in checkpoints (a run in another precision than training is '
                             'warned: its SAM features differ slightly)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the SAM image encoder (worth it on GPUs for long runs; the first '
                             'batches are slow while it compiles)')
    parser.add_argument('--no_sam', action='store_true',
                        help='ablation: the same U-Net without the SAM branch')
    parser.add_argument('--n_masks', type=int, default=2,
                        help='number of masks of the mask module (paper Table IV; 0 disables it)')
    parser.add_argument('--mask_init_bias', type=float, default=3.0,
                        help='initial bias of each mask network\'s last layer: +3 starts the masks open (sigmoid(3) = '
                             '0.95, y_n ~ y_0); 0 starts them at 0.5 (y_n ~ y_0 / 2^n), the zero-bias start of older '
                             'runs, for the ablation')
    parser.add_argument('--sam_embed_dim', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--sam_depth', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--sam_num_heads', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--sam_global_attn_indexes', type=str, default=None, help=argparse.SUPPRESS)
    return parser


def sam_options(opt: argparse.Namespace | None) -> argparse.Namespace:
    """The sam_unet flags of ``opt``, with add_sam_options' defaults for any it lacks (or for opt=None)."""
    merged = add_sam_options(argparse.ArgumentParser()).parse_args([])
    for key in vars(merged):
        if opt is not None and hasattr(opt, key):
            setattr(merged, key, getattr(opt, key))
    return merged


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


# ----------------------------------------------------------------------------- SAM weights

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


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; computed once per (path, size, mtime)."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def read_sam_encoder_state(path: str) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` weights of an official SAM checkpoint, prefix removed (other keys ignored).

    Raises FileNotFoundError (no file), RuntimeError (not loadable) or ValueError (not a SAM checkpoint).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--sam_checkpoint {path}: no such file (expected an official SAM checkpoint such as '
                                f'{SAM_OFFICIAL_FILES["vit_b"]}, from {SAM_DOWNLOAD_URL})')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # unpickling and I/O raise many kinds
        raise RuntimeError(f'--sam_checkpoint {path} cannot be read as a PyTorch checkpoint: {exc}') from exc
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


# ----------------------------------------------------------------------------- parts

def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``size`` (the paper's B); antialiased when shrinking.

    Without antialiasing, shrinking the 64x64 SAM map to the 1x1 bottleneck would read only its 4
    centre pixels; with it, every output pixel averages the input under a triangle filter.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=shrinking)


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

    Attention runs through fused scaled_dot_product_attention (models/sam_attention.py), equal to
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
        if in_channels not in (1, 3):
            raise ValueError(f'SAM reads 1- or 3-channel images; --input_nc is {in_channels}')
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
        """Everything that decides F for a given image, for feature caches (util/sam_cache.py): the weights
        (file sha256, or the seeded random init), the encoder's shape, the input size and the precision."""
        return {'sam_sha256': self.checkpoint_sha256 or f'random-init-seed-{SAM_RANDOM_INIT_SEED}',
                'model_type': self.model_type, 'config': [self.config.embed_dim, self.config.depth,
                                                          self.config.num_heads, list(self.config.global_attn_indexes)],
                'input_size': self.input_size, 'precision': self.precision_on(device)}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 or 3, H, W) in [-1, 1] -> (N, 3, S, S) normalised as SAM expects."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        rgb = (x + 1.0) * 127.5
        return resize_bilinear((rgb - self.pixel_mean) / self.pixel_std, (self.input_size, self.input_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = SAM_PRECISIONS[self.precision_on(x.device)]
        if self.finetune:
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
                return self.image_encoder(self.preprocess(x)).float()
        if next(self.image_encoder.parameters()).dtype != dtype:
            self.image_encoder.to(dtype)      # frozen weights held in the run's precision (no casts per op)
        with torch.inference_mode():
            feature = self.image_encoder(self.preprocess(x).to(dtype))
        return feature.to(torch.float32, copy=True)  # a copy made outside inference mode is a normal tensor


class SamAdapter(nn.Module):
    """A_i(F) = C_i(B(F, s_i)) (eq. 2): 1x1 convolution 256 -> ``width`` and bilinear resizing to s_i.

    Choices: C_i is a 1x1 convolution (a per-pixel linear map), so it commutes exactly with bilinear
    resizing (whose weights sum to 1); we therefore run whichever order touches fewer pixels: the
    convolution first when the stage is larger than F (the paper's prose order), the resize first
    when it is smaller (eq. 2's order). Its width equals the stage's width, so T_i sees SAM and
    CNN features in equal parts.
    """

    def __init__(self, width: int, in_channels: int = SAM_OUT_CHANS):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, kernel_size=1)

    def forward(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if size[0] * size[1] >= feature.shape[-2] * feature.shape[-1]:
            return resize_bilinear(self.conv(feature), size)
        return self.conv(resize_bilinear(feature, size))


class SoftClamp(nn.Module):
    """S(z) = clamp(z, 0, 1) + alpha * (min(0, z) + max(0, z - 1)) (eq. 3); slope 1 inside [0, 1], alpha outside."""

    def __init__(self, alpha: float = SOFTCLAMP_ALPHA):
        super().__init__()
        self.alpha = alpha

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(0.0, 1.0) + self.alpha * (z.clamp(max=0.0) + (z - 1.0).clamp(min=0.0))

    def extra_repr(self) -> str:
        return f'alpha={self.alpha}'


class FusedStage(nn.Module):
    """Encoder stage E_i = T_i(e_i (+) A_i(F)) (eq. 1): (N, in_nc, h, w) -> (N, width, h/2, w/2).

    e_i is a 4x4 stride-2 convolution of E_{i-1} (the classic U-Net downsampling). T_i is a 1x1
    convolution (2*width -> width, the projection that keeps the widths of the classic U-Net), then
    normalisation and ``activation`` (LeakyReLU 0.2; SoftClamp at the bottleneck). The bottleneck
    (1x1 for a 256 input) has no normalisation: instance norm of a single pixel is always 0.
    Without SAM (``adapter`` None, the --no_sam ablation) T_i acts on e_i alone.
    """

    def __init__(self, in_nc: int, width: int, norm_layer: NormLayer, use_sam: bool, activation: nn.Module,
                 normalise: bool = True):
        super().__init__()
        norm_layer = norm_layer if normalise else get_norm_layer('none')
        self.down = nn.Conv2d(in_nc, width, kernel_size=4, stride=2, padding=1, bias=False)
        self.adapter = SamAdapter(width) if use_sam else None
        fused = 2 * width if use_sam else width
        self.transform = nn.Sequential(nn.Conv2d(fused, width, kernel_size=1, bias=conv_bias_needed(norm_layer)),
                                       norm_layer(width), activation)

    def forward(self, x: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor:
        e = self.down(x)
        if self.adapter is not None:
            e = torch.cat([e, self.adapter(feature, tuple(e.shape[-2:]))], 1)
        return self.transform(e)


class DecoderStage(nn.Module):
    """Light decoder step: 4x4 stride-2 transposed convolution -> norm -> ReLU (-> dropout); doubles the side."""

    def __init__(self, in_nc: int, out_nc: int, norm_layer: NormLayer, use_dropout: bool = False):
        super().__init__()
        layers = [nn.ConvTranspose2d(in_nc, out_nc, kernel_size=4, stride=2, padding=1,
                                     bias=conv_bias_needed(norm_layer)), norm_layer(out_nc), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LightDecoder(nn.Module):
    """[E_1..E_8] -> y_0 (N, output_nc, H, W) in [-1, 1].

    The clamped bottleneck E_8 is upsampled; then at every level the upsampled features are
    concatenated with the matching encoder output E_i and upsampled again (transposed conv, norm,
    ReLU); the last step is a transposed convolution and tanh. With ``use_dropout`` the three steps
    after the first get dropout 0.5, as in the classic unet_256.
    """

    def __init__(self, widths: list[int], output_nc: int, norm_layer: NormLayer, use_dropout: bool = False):
        super().__init__()
        n = len(widths)
        ups = [DecoderStage(widths[-1], widths[-2], norm_layer)]
        for level in range(n - 2, 0, -1):  # skip from E_{level+1} (0-based index ``level``)
            ups.append(DecoderStage(2 * widths[level], widths[level - 1], norm_layer,
                                    use_dropout and n - 2 - level < 3))
        self.ups = nn.ModuleList(ups)
        self.out = nn.Sequential(nn.ConvTranspose2d(2 * widths[0], output_nc, kernel_size=4, stride=2, padding=1),
                                 nn.Tanh())

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        x = self.ups[0](stages[-1])
        for up, skip in zip(self.ups[1:], reversed(stages[1:-1])):
            x = up(torch.cat([x, skip], 1))
        return self.out(torch.cat([x, stages[0]], 1))


class MaskModule(nn.Module):
    """Mask correction (eqs. 4-5): M_k = sigmoid(psi_k(y_{k-1})), y_k = y_{k-1} * M_k, k = 1..n.

    psi_k: 3x3 conv -> norm -> ReLU, twice, then a 1x1 conv to one channel. Choices: one mask per
    pixel, shared by all channels (the channels of a grayscale slice repeated to RGB carry the same
    information, and a one-channel mask is an image one can look at). Eq. 5 read literally,
    y_k = y_{k-1} * prod_{i<=k} sigmoid(psi_i(y_{k-1})), would run every earlier psi_i again on y_{k-1} and
    apply all k of those masks at step k; we follow eq. 4 (M_k is computed once, from y_{k-1}) and the prose
    ("applied sequentially"), so each mask is applied once and y_n = y_0 * prod_k M_k.

    Start: the paper gives no initialisation. psi_k's last bias starts at ``init_bias`` (default +3), so every mask
    starts open, M_k ~ sigmoid(3) = 0.95, where the sparsity loss (eq. 10) pulls it, and y_n starts near y_0
    (0.91 y_0 with two masks). With ``init_bias`` 0 (the classic zero bias) the masks start at 0.5 and y_n at
    y_0 / 2^n: air (-1, -1024 HU) comes out near -0.25 (about +500 HU) until the masks learn to open.
    Returns ([y_0..y_n], [M_1..M_n]), masks (N, 1, H, W) in [0, 1].
    """

    def __init__(self, n_masks: int, channels: int, width: int, norm_layer: NormLayer, init_bias: float = 3.0):
        super().__init__()
        if n_masks < 0:
            raise ValueError(f'--n_masks must be >= 0, got {n_masks}')
        bias = conv_bias_needed(norm_layer)
        self.init_bias = float(init_bias)
        self.psi = nn.ModuleList(nn.Sequential(
            nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=bias), norm_layer(width), nn.ReLU(True),
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=bias), norm_layer(width), nn.ReLU(True),
            nn.Conv2d(width, 1, kernel_size=1)) for _ in range(n_masks))
        self.open_masks()

    def open_masks(self) -> None:
        """Set the bias of every psi_k's last convolution to ``init_bias`` (again after a weight initialisation)."""
        with torch.no_grad():
            for psi in self.psi:
                psi[-1].bias.fill_(self.init_bias)

    def forward(self, y0: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        steps, masks = [y0], []
        for psi in self.psi:
            masks.append(torch.sigmoid(psi(steps[-1])))
            steps.append(steps[-1] * masks[-1])
        return steps, masks


class GeneratorOutput(NamedTuple):
    """What SamUNet(x, return_all=True) returns: the image y_n, all steps [y_0..y_n] and masks [M_1..M_n]."""
    image: torch.Tensor
    steps: list[torch.Tensor]
    masks: list[torch.Tensor]


class SamUNet(nn.Module):
    """MRNet generator: (N, input_nc, H, W) in [-1, 1] -> (N, output_nc, H, W) in [-1, 1]; H, W multiples of 256.

    Stage widths are those of the classic unet_256: ngf, 2ngf, 4ngf, 8ngf x 5. ``sam`` None is the
    --no_sam ablation. ``forward(x, return_all=True)`` also gives the mask steps for the MRNet losses.
    Checkpoint hooks (used by BaseModel): a frozen SAM is left out of the saved state (it is rebuilt
    from --sam_checkpoint, or from the fixed random seed; the meta records the file's name and
    sha256); a fine-tuned one is saved.
    """

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm_layer: NormLayer = nn.InstanceNorm2d,
                 use_dropout: bool = False, n_masks: int = 2, sam: SamFeatureEncoder | None = None,
                 mask_init_bias: float = 3.0):
        super().__init__()
        self.input_nc = input_nc
        self.sam = sam
        widths = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (N_STAGES - 3)
        stages, in_nc = [], input_nc
        for i, width in enumerate(widths):
            last = i == N_STAGES - 1
            activation = SoftClamp() if last else nn.LeakyReLU(0.2, True)
            stages.append(FusedStage(in_nc, width, norm_layer, sam is not None, activation, normalise=not last))
            in_nc = width
        self.encoder = nn.ModuleList(stages)
        self.decoder = LightDecoder(widths, output_nc, norm_layer, use_dropout)
        self.masks = MaskModule(n_masks, output_nc, ngf, norm_layer, mask_init_bias)

    @property
    def n_masks(self) -> int:
        return len(self.masks.psi)

    def check_input(self, x: torch.Tensor) -> None:
        check_image_channels(x, self.input_nc)
        height, width = x.shape[-2:]
        if height % MIN_SIDE or width % MIN_SIDE:
            raise ValueError(f'sam_unet has {N_STAGES} stride-2 stages, so height and width must be multiples of '
                             f'{MIN_SIDE} ({MIN_SIDE}, {2 * MIN_SIDE}, ...); got {height}x{width}: resize the data '
                             '(--load_size / --crop_size)')

    def encode(self, x: torch.Tensor, sam_feature: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[E_1, ..., E_8]; E_8 is the soft-clamped bottleneck. ``sam_feature`` (N, 256, S/16, S/16), when
        given, is used instead of running SAM on ``x`` (a cached frozen feature, util/sam_cache.py)."""
        feature = None
        if self.sam is not None:
            feature = self.sam(x) if sam_feature is None else self._check_feature(sam_feature, x)
        stages = []
        for stage in self.encoder:
            x = stage(x, feature)
            stages.append(x)
        return stages

    def _check_feature(self, feature: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        side = self.sam.input_size // SAM_PATCH_SIZE
        want = (x.shape[0], SAM_OUT_CHANS, side, side)
        if tuple(feature.shape) != want:
            raise ValueError(f'a given SAM feature has shape {tuple(feature.shape)}; this generator (--sam_input_size '
                             f'{self.sam.input_size}) needs {want}')
        return feature.to(x.dtype)

    def forward(self, x: torch.Tensor, return_all: bool = False,
                sam_feature: torch.Tensor | None = None) -> torch.Tensor | GeneratorOutput:
        self.check_input(x)
        steps, masks = self.masks(self.decoder(self.encode(x, sam_feature)))
        return GeneratorOutput(steps[-1], steps, masks) if return_all else steps[-1]

    # ------------------------------------------------------------------ checkpoint hooks
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        if self.sam is None or self.sam.finetune:
            return state
        return {k: v for k, v in state.items() if not k.startswith('sam.')}

    def checkpoint_meta(self) -> dict:
        if self.sam is None:
            return {'no_sam': True, 'n_masks': self.n_masks}
        return {'no_sam': False, 'n_masks': self.n_masks, 'sam_model_type': self.sam.model_type,
                'sam_checkpoint': self.sam.checkpoint_name, 'sam_sha256': self.sam.checkpoint_sha256,
                'sam_input_size': self.sam.input_size, 'sam_finetune': self.sam.finetune,
                'sam_precision': self.sam.precision_on()}

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        """Load ``state`` strictly; SAM's weights may be absent (then those from --sam_checkpoint stay).

        Raises RuntimeError when keys are missing or unexpected; warns when the SAM this run uses is
        not the one the checkpoint was trained with, or runs in another --sam_precision.
        """
        own = self.state_dict()
        sam_keys = {k for k in own if k.startswith('sam.')}
        has_sam = any(k.startswith('sam.') for k in state)
        required = set(own) if has_sam else set(own) - sam_keys
        missing, unexpected = sorted(required - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise RuntimeError(f'sam_unet checkpoint does not fit (trained with {dict(meta)}): '
                               f'missing {missing[:5]}, unexpected {unexpected[:5]}')
        self.load_state_dict(state, strict=has_sam)
        if self.sam is not None and not has_sam:
            self._warn_other_sam(meta)
        if self.sam is not None:
            self._warn_other_precision(meta)

    def _warn_other_sam(self, meta: Mapping) -> None:
        trained = (meta.get('sam_checkpoint'), meta.get('sam_sha256'))
        now = (self.sam.checkpoint_name, self.sam.checkpoint_sha256)
        if 'sam_sha256' in meta and trained[1] != now[1]:
            warnings.warn(f'this generator was trained with SAM weights {trained[0] or "(random)"} '
                          f'(sha256 {trained[1]}), but this run uses {now[0] or "(random)"} (sha256 {now[1]}): '
                          'its SAM features differ from those it learnt; pass the same --sam_checkpoint',
                          UserWarning, stacklevel=3)
        if meta.get('sam_input_size', self.sam.input_size) != self.sam.input_size:
            warnings.warn(f'this generator was trained with --sam_input_size {meta["sam_input_size"]}, this run '
                          f'uses {self.sam.input_size}', UserWarning, stacklevel=3)

    def _warn_other_precision(self, meta: Mapping) -> None:
        precision = self.sam.precision_on()
        if meta.get('sam_precision', precision) != precision:
            warnings.warn(f'this generator was trained with SAM in {meta["sam_precision"]}, this run computes SAM in '
                          f'{precision} (--sam_precision {self.sam.precision}), so its SAM features differ slightly '
                          f'from those it learnt; pass --sam_precision {meta["sam_precision"]} to match',
                          UserWarning, stacklevel=3)


def define_sam_unet(input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
                    init_gain: float, opt: argparse.Namespace | None = None) -> SamUNet:
    """Build the MRNet generator from the options (see add_sam_options); a CPU module.

    The U-Net parts get ``init_type`` initialisation; SAM keeps its loaded (or seeded random) weights.
    """
    o = sam_options(opt)
    sam = None
    if not o.no_sam:
        sam = SamFeatureEncoder(sam_encoder_config(o), o.sam_input_size, input_nc, o.sam_checkpoint,
                                o.sam_finetune, o.sam_model_type, o.sam_precision, o.compile)
    net = SamUNet(input_nc, output_nc, ngf, get_norm_layer(norm), use_dropout, o.n_masks, sam, o.mask_init_bias)
    for part in (net.encoder, net.decoder, net.masks):
        init_weights(part, init_type, init_gain)
    net.masks.open_masks()
    return net
