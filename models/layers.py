"""Layers and helpers every network shares: the normalisations named by ``--norm`` (SyncBatchNorm included),
weight initialisation (``--init_type``), the input-channel check, antialiased bilinear resizing and a parameter
count.

A leaf module: it imports no generator, discriminator or model, so every network file can build on it.
Images are tensors (N, C, H, W).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

NormLayer = Callable[[int], nn.Module]

NORM_TYPES = ('batch', 'instance', 'syncbatch', 'none')
INIT_TYPES = ('normal', 'xavier', 'kaiming', 'orthogonal')


def choices(names: tuple[str, ...]) -> str:
    """'a', 'b', 'c' for an error message listing the accepted names."""
    return ', '.join(repr(n) for n in names)


# --------------------------------------------------------------------------- normalisation

class _AllReduceSum(torch.autograd.Function):
    """Differentiable SUM all-reduce over ``group``: every process gets the sum of all
    processes' tensors, and the gradient w.r.t. each process's tensor is the sum of all
    processes' incoming gradients (each process's output depends on every input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=ctx.group)
        return total, None


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the whole DDP batch, CPU included.

    PyTorch's nn.SyncBatchNorm synchronises only CUDA/XPU/HPU/PrivateUse1 tensors and raises
    for CPU ones, and DistributedDataParallel refuses CPU modules that contain one; so this
    layer is a plain _BatchNorm that borrows nn.SyncBatchNorm's forward for those devices.
    For other tensors, in training mode under an initialised process group
    (``process_group`` or WORLD) of more than one process, it normalises input (N, C, *)
    with the statistics of the whole distributed batch: per channel it all-reduces the
    element count n and sum (float64), forms the global mean, then all-reduces the sum of
    squared deviations from it to get the biased global variance (two passes, which avoids
    the cancellation of E[x^2] - mean^2). Both collectives are differentiable, so input and
    affine gradients equal those of batch norm on the concatenated batch (each process's
    weight/bias gradient is its share; DDP sums them). running_mean / running_var are
    updated with the global mean and unbiased variance var * n / (n - 1), with ``momentum``
    (or the cumulative average when it is None), exactly as BatchNorm does. With one
    process, without a process group, or in eval mode it is plain batch norm.
    """

    _SYNC_DEVICES = ('cuda', 'xpu', 'hpu')
    _check_input_dim = nn.SyncBatchNorm._check_input_dim                  # any (N, C, *) input
    _check_non_zero_input_channels = nn.SyncBatchNorm._check_non_zero_input_channels

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: dist.ProcessGroup | None = None,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type in self._sync_devices():
            return nn.SyncBatchNorm.forward(self, input)  # torch's own synchronised kernels
        group = self._group_to_sync()
        return super().forward(input) if group is None else self._synced_forward(input, group)

    @classmethod
    def _sync_devices(cls) -> tuple[str, ...]:
        return cls._SYNC_DEVICES + (torch._C._get_privateuse1_backend_name(),)

    def _group_to_sync(self) -> dist.ProcessGroup | None:
        """The process group to synchronise over: None unless training with more than one process."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group or dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def _synced_forward(self, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        """Batch norm of x (N, C, *) with mean and variance all-reduced over ``group``."""
        self._check_input_dim(x)
        self._check_non_zero_input_channels(x)
        dims = [0, *range(2, x.dim())]
        per_channel = (1, -1) + (1,) * (x.dim() - 2)
        count = x.new_tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        local = torch.cat([x.sum(dims, dtype=torch.float64), count])  # (C + 1,): sums, then n
        total = _AllReduceSum.apply(local, group)
        n = int(total[-1].item())
        if n <= 1:
            raise ValueError(f'SyncBatchNorm expects more than 1 value per channel when training, '
                             f'got {n} over {dist.get_world_size(group)} processes')
        mean = (total[:-1] / n).to(x.dtype)
        centred = x - mean.reshape(per_channel)
        var = _AllReduceSum.apply(centred.square().sum(dims, dtype=torch.float64), group) / n
        out = centred * torch.rsqrt(var.to(x.dtype) + self.eps).reshape(per_channel)
        if self.affine:
            out = out * self.weight.reshape(per_channel) + self.bias.reshape(per_channel)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """running = (1 - f) * running + f * batch statistic, f = momentum or 1 / batches seen."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def _no_norm(num_features: int) -> nn.Module:
    return nn.Identity()


def get_norm_layer(norm_type: str = 'instance') -> NormLayer:
    """Return a factory ``num_features -> nn.Module`` for the normalisation named by ``--norm``.

    'batch': BatchNorm2d with learnt scale/shift and running statistics;
    'instance': InstanceNorm2d without either; 'syncbatch': batch norm synchronised across
    DDP processes (see SyncBatchNorm); 'none': identity.
    """
    if norm_type == 'batch':
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == 'instance':
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm_type == 'syncbatch':
        return functools.partial(SyncBatchNorm, affine=True, track_running_stats=True)
    if norm_type == 'none':
        return _no_norm
    raise ValueError(f'normalization layer {norm_type!r} is not supported; choose one of {choices(NORM_TYPES)}')


def conv_bias_needed(norm_layer: NormLayer) -> bool:
    """True when ``norm_layer`` has no learnt shift, so the convolution before it needs a bias.

    (Batch norm brings its own shift; instance norm without affine and 'none' do not. The
    classic toolkit also drops the bias for 'none'; we keep it, since nothing replaces it.)
    """
    probe = norm_layer(1)
    return not (isinstance(probe, _NormBase) and probe.affine)


# --------------------------------------------------------------------------- init

def init_weights(net: nn.Module, init_type: str = 'normal', init_gain: float = 0.02) -> nn.Module:
    """Initialise ``net`` in place and return it.

    Conv/Linear weights: 'normal' N(0, gain), 'xavier' Xavier-normal with gain, 'kaiming'
    Kaiming-normal (fan_in, a=0; gain unused), 'orthogonal' orthogonal scaled by gain; their
    biases 0. Batch-norm scales N(1, gain), shifts 0.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f'initialization method {init_type!r} is not supported; choose one of {choices(INIT_TYPES)}')

    def init_module(m: nn.Module) -> None:
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            if init_type == 'normal':
                nn.init.normal_(m.weight, 0.0, init_gain)
            elif init_type == 'xavier':
                nn.init.xavier_normal_(m.weight, gain=init_gain)
            elif init_type == 'kaiming':
                nn.init.kaiming_normal_(m.weight, a=0, mode='fan_in')
            else:
                nn.init.orthogonal_(m.weight, gain=init_gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, init_gain)
            nn.init.zeros_(m.bias)

    net.apply(init_module)
    return net


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``net`` (only those with requires_grad if ``trainable_only``)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def check_image_channels(x: torch.Tensor, input_nc: int) -> None:
    """Raise ValueError unless ``x`` is a batch (N, input_nc, H, W)."""
    if x.dim() != 4:
        raise ValueError(f'the network expects a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}')
    if x.shape[1] != input_nc:
        raise ValueError(f'the network expects input_nc={input_nc} channels, got {x.shape[1]}: '
                         'set --input_nc to match the data')


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``size`` (the paper's B); antialiased when shrinking.

    Without antialiasing, shrinking the 64x64 SAM map to the 1x1 bottleneck would read only its 4
    centre pixels; with it, every output pixel averages the input under a triangle filter.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=shrinking)
