"""Mixed-precision training (``--amp bf16|fp16|off``) and the loop's GPU speed options (``--compile``,
``--channels_last``), shared by every model through BaseModel.

Master weights, optimiser state and checkpoints stay float32: only the forward passes of generators and
discriminators run under ``torch.autocast`` (convolutions, matmuls and attention in bf16/fp16). What stays float32
and why:

- losses: every model computes them on float32 tensors (generator outputs are cast to float32, the GAN loss casts
  the discriminator's map; ``l1_loss``/``mse_loss``/``binary_cross_entropy_with_logits`` are float32 ops of autocast
  anyway), so a loss of ~1e-3 next to one of ~100 (``--lambda_L1``) keeps its digits;
- normalisation statistics: InstanceNorm/BatchNorm accumulate mean and variance in float32 for bf16/fp16 input
  (PyTorch's kernels), and their affine parameters are float32;
- MRNet's SoftClamp (eq. 3): its slope alpha outside [0, 1] (SOFTCLAMP_ALPHA, models/generators/sam_unet.py) is
  below bf16's resolution at 1 (2^-7), so it runs in float32; the mask module's sigmoids and products
  y_k = y_{k-1} * M_k (eqs. 4-5) are float32, because they feed the mask losses (eqs. 9-10) directly;
- the SAM branch runs in its own ``--sam_precision`` (models/encoders/sam_encoder.py) whatever ``--amp`` says.

fp16 needs loss scaling (its exponent range is small): a GradScaler multiplies each loss before backward, skips an
optimiser step whose gradients hold inf/NaN and lowers the scale; its state is saved with the training state and
restored on resume. bf16 has float32's exponent range and needs none.
"""
from __future__ import annotations

import argparse
import contextlib

import torch

from util.parser_flags import add_flag

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
AMP_CHOICES = ('auto', 'off', *AMP_DTYPES)
# the speed flags where a parser has none (test.py's; it has --compile only with the SAM encoder's flags): off
SPEED_DEFAULTS = {'compile': False, 'channels_last': False}


def add_amp_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--amp, --compile, --channels_last (training)."""
    parser.add_argument('--amp', default='auto', choices=AMP_CHOICES,
                        help='mixed precision for generator, discriminator and losses (fp32 master weights; '
                             'checkpoints unchanged): auto = bf16 on GPUs that support it, off on other GPUs and '
                             'on the CPU; fp16 uses a GradScaler (saved for resume)')
    add_flag(parser, '--compile', action='store_true',
             help='torch.compile the generator and discriminator (and, for MRNet, the SAM encoder) in place (GPU; '
                  'the first steps are slow while it compiles)')
    parser.add_argument('--channels_last', action='store_true',
                        help='keep networks and batches in channels-last memory format (faster convolutions on '
                             'GPUs with bf16/fp16 tensor cores; measure with scripts/benchmark.py train)')
    return parser


def resolve_amp(amp: str, device: torch.device) -> str:
    """'off', 'bf16' or 'fp16' for --amp on ``device``: 'auto' is bf16 on a CUDA GPU that supports it, off
    elsewhere (the CPU: bf16 there is emulated on most processors and slower than fp32)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f'--amp must be one of {", ".join(AMP_CHOICES)}; got {amp!r}')
    if amp != 'auto':
        return amp
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return 'bf16'
    return 'off'


class Precision:
    """The precision of one training run on ``device``: an autocast context, loss scaling and optimiser steps.

    ``mode`` is 'off', 'bf16' or 'fp16' (see :func:`resolve_amp`). With 'off' every method is what the plain loop
    does: ``autocast()`` is a null context, ``backward(loss)`` is ``loss.backward()``, ``step(o)`` is ``o.step()``.
    """

    def __init__(self, mode: str, device: torch.device):
        self.mode = resolve_amp(mode, device)
        self.device_type = device.type
        self.dtype = AMP_DTYPES.get(self.mode)
        self.scaler = torch.amp.GradScaler(device.type) if self.mode == 'fp16' else None

    def autocast(self):
        """Context for forward passes and losses: autocast to the run's dtype, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with fp16, unscaled first and skipped when a gradient is inf/NaN."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def update(self) -> None:
        """End of a training step: the loss scale's update (fp16: lowered after a skipped step, raised after
        ``growth_interval`` good ones). Once per step, after every optimiser stepped."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return {'mode': self.mode, 'scaler': self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore the loss scale of a saved fp16 run; anything else (another mode, an older checkpoint) keeps
        the fresh state."""
        if state and self.scaler is not None and state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])


def adam(params, opt: argparse.Namespace, device: torch.device) -> torch.optim.Adam:
    """Adam(lr, (beta1, 0.999)) as every model uses it; on a GPU the fused kernel (one launch for all parameters,
    the same update; its state dict is the ordinary one, so checkpoints are unchanged)."""
    return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, 0.999), fused=True if device.type == 'cuda' else None)


def speed_up(net: torch.nn.Module, opt: argparse.Namespace) -> torch.nn.Module:
    """``net`` in channels-last format (--channels_last) and compiled in place (--compile): parameters and
    state-dict keys unchanged, so checkpoints are the same."""
    if opt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if opt.compile:
        net.compile()
    return net
