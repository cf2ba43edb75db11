"""The MRNet generator, ``--netG sam_unet`` (paper section III, eqs. 1-5), and its own parts.

    x (N, C, H, W) in [-1, 1], H and W multiples of 256
      -> SamFeatureEncoder (models/encoders/sam_encoder.py): frozen SAM ViT image encoder F (N, 256, S/16, S/16)
      -> 8 FusedStages E_1..E_8 (eq. 1-2): E_i = T_i(e_i (+) A_i(F)), side H/2^i
      -> SoftClamp at the bottleneck (eq. 3)
      -> LightDecoder: [upsampled features (+) E_i] -> ConvT -> norm -> ReLU, ..., tanh -> y_0
      -> MaskModule (eq. 4-5): M_k = sigmoid(psi_k(y_{k-1})), y_k = y_{k-1} * M_k -> y_n in [-1, 1]

Where the paper leaves a choice open, the class that makes it says which and why; the tests
in tests/test_sam_unet.py pin each choice.
"""
from __future__ import annotations

import argparse
import warnings
from typing import Mapping, NamedTuple

import torch
import torch.nn as nn

from util.parser_flags import has_option

from ..layers import NormLayer, check_image_channels, conv_bias_needed, get_norm_layer, init_weights, resize_bilinear
from models.encoders.sam_encoder import (SAM_OUT_CHANS, SAM_PATCH_SIZE, SamFeatureEncoder, add_sam_encoder_options,
                           sam_encoder_config)
from .base import Generator, check_size

N_STAGES = 8
MIN_SIDE = 2 ** N_STAGES  # 256: the bottleneck is 1x1
SOFTCLAMP_ALPHA = 0.001


# ----------------------------------------------------------------------------- options

def add_sam_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of the 'sam_unet' generator (the SAM encoder's, then masks and ablations); adding twice is a
    no-op."""
    if has_option(parser, '--n_masks'):
        return parser
    add_sam_encoder_options(parser)
    parser.add_argument('--no_sam', action='store_true',
                        help='ablation: the same U-Net without the SAM branch')
    parser.add_argument('--n_masks', type=int, default=2,
                        help='number of masks of the mask module (paper Table IV; 0 disables it)')
    parser.add_argument('--mask_init_bias', type=float, default=3.0,
                        help='initial bias of each mask network\'s last layer: +3 starts the masks open (sigmoid(3) = '
                             '0.95, y_n ~ y_0); 0 starts them at 0.5 (y_n ~ y_0 / 2^n), the zero-bias start of older '
                             'runs, for the ablation')
    return parser


def sam_options(opt: argparse.Namespace | None) -> argparse.Namespace:
    """The sam_unet flags of ``opt``, with add_sam_options' defaults for any it lacks (or for opt=None)."""
    return SamUNet.options(opt)


# ----------------------------------------------------------------------------- parts

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
        z = z.float()   # under --amp: alpha = 0.001 is below bf16's resolution at 1 (2^-7)
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
    y_0 / 2^n: air (-1) comes out near -0.25, dense tissue on the CT scale (CT_WINDOW, util/intensity.py), until the
    masks learn to open.
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
        # masks and products in float32 under --amp (they feed the mask losses, eqs. 9-10); psi_k's convolutions
        # run in the autocast dtype
        steps, masks = [y0.float()], []
        for psi in self.psi:
            masks.append(torch.sigmoid(psi(steps[-1]).float()))
            steps.append(steps[-1] * masks[-1])
        return steps, masks


class GeneratorOutput(NamedTuple):
    """What SamUNet(x, return_all=True) returns: the image y_n, all steps [y_0..y_n] and masks [M_1..M_n]."""
    image: torch.Tensor
    steps: list[torch.Tensor]
    masks: list[torch.Tensor]


class SamUNet(Generator):
    """MRNet generator: (N, input_nc, H, W) in [-1, 1] -> (N, output_nc, H, W) in [-1, 1]; H, W multiples of 256.

    Stage widths are those of the classic unet_256: ngf, 2ngf, 4ngf, 8ngf x 5. ``sam`` None is the
    --no_sam ablation. ``forward(x, return_all=True)`` also gives the mask steps for the MRNet losses.
    Checkpoint hooks (used by BaseModel): a frozen SAM is left out of the saved state (it is rebuilt
    from --sam_checkpoint, or from the fixed random seed; the meta records the file's name and
    sha256); a fine-tuned one is saved.
    """

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return add_sam_options(parser)

    @classmethod
    def check_options(cls, opt: argparse.Namespace) -> None:
        """--crop_size must be a multiple of 256 (eight stride-2 stages): refused before the data and the SAM
        feature cache are built."""
        check_size('sam_unet', int(opt.crop_size), MIN_SIDE, f'{N_STAGES} stride-2 stages: {MIN_SIDE}, '
                   f'{2 * MIN_SIDE}, ...')

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> SamUNet:
        return define_sam_unet(input_nc, output_nc, ngf, norm, use_dropout, init_type, init_gain, opt)

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
        given, is used instead of running SAM on ``x`` (a cached frozen feature, data/sam_cache.py)."""
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
