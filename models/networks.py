"""Building blocks shared by every model: normalisation layers, weight init, learning-rate
schedulers, the classic generators (ResNet, U-Net), the PatchGAN / pixel discriminators,
GAN objectives and the WGAN-GP gradient penalty.

Images are tensors (N, C, H, W) in [-1, 1]; generators end in tanh. The architectures and
their parameter counts match the classic pix2pix/CycleGAN toolkit for the same options.
The MRNet generator ('sam_unet') lives in ``models/sam_unet.py``; ``define_G`` delegates to it.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.optim import lr_scheduler

NormLayer = Callable[[int], nn.Module]

NORM_TYPES = ('batch', 'instance', 'syncbatch', 'none')
INIT_TYPES = ('normal', 'xavier', 'kaiming', 'orthogonal')
LR_POLICIES = ('linear', 'step', 'plateau', 'cosine')
GENERATORS = ('resnet_9blocks', 'resnet_6blocks', 'unet_128', 'unet_256', 'sam_unet')
DISCRIMINATORS = ('basic', 'n_layers', 'pixel')
GAN_MODES = ('lsgan', 'vanilla', 'wgangp')
GP_TYPES = ('real', 'fake', 'mixed')


def _choices(names: tuple[str, ...]) -> str:
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
    raise ValueError(f'normalization layer {norm_type!r} is not supported; choose one of {_choices(NORM_TYPES)}')


def conv_bias_needed(norm_layer: NormLayer) -> bool:
    """True when ``norm_layer`` has no learnt shift, so the convolution before it needs a bias.

    (Batch norm brings its own shift; instance norm without affine and 'none' do not. The
    classic toolkit also drops the bias for 'none'; we keep it, since nothing replaces it.)
    """
    probe = norm_layer(1)
    return not (isinstance(probe, _NormBase) and probe.affine)


# --------------------------------------------------------------------------- init / schedulers

def init_weights(net: nn.Module, init_type: str = 'normal', init_gain: float = 0.02) -> nn.Module:
    """Initialise ``net`` in place and return it.

    Conv/Linear weights: 'normal' N(0, gain), 'xavier' Xavier-normal with gain, 'kaiming'
    Kaiming-normal (fan_in, a=0; gain unused), 'orthogonal' orthogonal scaled by gain; their
    biases 0. Batch-norm scales N(1, gain), shifts 0.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f'initialization method {init_type!r} is not supported; choose one of {_choices(INIT_TYPES)}')

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


def get_scheduler(optimizer: torch.optim.Optimizer, opt) -> lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau:
    """Learning-rate scheduler named by ``opt.lr_policy``, stepped once per epoch.

    'linear': lr for the first ``opt.n_epochs`` epochs (counting from ``opt.epoch_count``),
    then linearly down towards 0 over ``opt.n_epochs_decay`` epochs;
    'step': x0.1 every ``opt.lr_decay_iters`` epochs; 'plateau': x0.2 when the metric passed
    to ``step`` stops falling by 1% for 5 epochs; 'cosine': cosine annealing to 0 over
    ``opt.n_epochs`` epochs.
    """
    policy = opt.lr_policy
    if policy == 'linear':
        def lambda_rule(epoch: int) -> float:
            return 1.0 - max(0, epoch + opt.epoch_count - opt.n_epochs) / float(opt.n_epochs_decay + 1)
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda_rule)
    if policy == 'step':
        return lr_scheduler.StepLR(optimizer, step_size=opt.lr_decay_iters, gamma=0.1)
    if policy == 'plateau':
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode='min', factor=0.2, threshold=0.01, patience=5)
    if policy == 'cosine':
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=opt.n_epochs, eta_min=0)
    raise ValueError(f'learning rate policy {policy!r} is not supported; choose one of {_choices(LR_POLICIES)}')


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


# --------------------------------------------------------------------------- generators

class ResnetBlock(nn.Module):
    """x + conv-norm-relu-(dropout)-conv-norm(x); (N, dim, H, W) -> same shape."""

    def __init__(self, dim: int, padding_type: str, norm_layer: NormLayer, use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers += self._padded_conv(dim, padding_type, use_bias) + [norm_layer(dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    @staticmethod
    def _padded_conv(dim: int, padding_type: str, use_bias: bool) -> list[nn.Module]:
        pads = {'reflect': nn.ReflectionPad2d, 'replicate': nn.ReplicationPad2d}
        if padding_type == 'zero':
            return [nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=use_bias)]
        if padding_type not in pads:
            raise ValueError(f"padding {padding_type!r} is not supported; choose one of 'reflect', 'replicate', 'zero'")
        return [pads[padding_type](1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Johnson-style ResNet generator: 7x7 conv, 2 stride-2 downsamplings, ``n_blocks``
    residual blocks at 1/4 resolution, 2 transposed-conv upsamplings, 7x7 conv, tanh.

    (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; H and W should be multiples of 4.
    """

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm_layer: NormLayer = nn.BatchNorm2d,
                 use_dropout: bool = False, n_blocks: int = 6, padding_type: str = 'reflect'):
        if n_blocks < 0:
            raise ValueError(f'n_blocks must be >= 0, got {n_blocks}')
        super().__init__()
        self.input_nc = input_nc
        use_bias = conv_bias_needed(norm_layer)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3),
                                   nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                                   norm_layer(ngf), nn.ReLU(True)]
        n_downsampling = 2
        for i in range(n_downsampling):
            width = ngf * 2 ** i
            layers += [nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                       norm_layer(width * 2), nn.ReLU(True)]
        width = ngf * 2 ** n_downsampling
        layers += [ResnetBlock(width, padding_type, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            width = ngf * 2 ** (n_downsampling - i)
            layers += [nn.ConvTranspose2d(width, width // 2, kernel_size=3, stride=2, padding=1, output_padding=1,
                                          bias=use_bias),
                       norm_layer(width // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_channels(x, self.input_nc)
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: downsample (4x4 stride-2 conv), run ``submodule``, upsample
    (4x4 stride-2 transposed conv) and, except at the outermost level, concatenate the
    block's input as the skip connection.

    Inner levels: (N, outer_nc, H, W) -> (N, 2*outer_nc, H, W).
    Outermost: (N, input_nc, H, W) -> (N, outer_nc, H, W) through tanh.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm_layer: NormLayer = nn.BatchNorm2d, use_dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        use_bias = conv_bias_needed(norm_layer)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        up_in = inner_nc if innermost else inner_nc * 2

        if outermost:
            down: list[nn.Module] = [downconv]
            up: list[nn.Module] = [nn.ReLU(True),
                                   nn.ConvTranspose2d(up_in, outer_nc, kernel_size=4, stride=2, padding=1), nn.Tanh()]
        else:
            upconv = nn.ConvTranspose2d(up_in, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            down = [nn.LeakyReLU(0.2), downconv] + ([] if innermost else [norm_layer(inner_nc)])
            up = [nn.ReLU(True), upconv, norm_layer(outer_nc)]
            if use_dropout and not innermost:
                up.append(nn.Dropout(0.5))
        middle = [] if submodule is None else [submodule]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net generator with ``num_downs`` stride-2 levels (7 for unet_128, 8 for unet_256):
    widths ngf, 2ngf, 4ngf, then 8ngf for every deeper level; the bottleneck is 1x1 for an
    input of side 2**num_downs.

    (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; H and W must be multiples of
    2**num_downs.
    """

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64,
                 norm_layer: NormLayer = nn.BatchNorm2d, use_dropout: bool = False):
        if num_downs < 5:
            raise ValueError(f'a U-Net needs num_downs >= 5, got {num_downs}')
        super().__init__()
        self.input_nc = input_nc
        self.num_downs = num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm_layer=norm_layer)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm_layer=norm_layer,
                                            use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm_layer=norm_layer)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True,
                                             norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_channels(x, self.input_nc)
        side = 2 ** self.num_downs
        height, width = x.shape[-2:]
        if height % side or width % side or height < side or width < side:
            raise ValueError(f'unet_{side} needs height and width that are multiples of {side} '
                             f'({side}, {2 * side}, ...); got {height}x{width}: resize or crop the input '
                             '(--load_size / --crop_size)')
        return self.model(x)


INSTANCE_NORM_STATISTICS = ('running_mean', 'running_var', 'num_batches_tracked')


def drop_instance_norm_statistics(net: nn.Module, state: dict) -> list[str]:
    """Remove from ``state`` (in place) the running_mean / running_var / num_batches_tracked entries of the
    InstanceNorm layers of ``net`` that keep no running statistics; returns the removed keys.

    PyTorch before 0.4 saved them, so the classic toolkit's own pretrained files carry them; it drops them on
    load, and so do we.
    """
    modules = dict(net.named_modules())
    dropped = []
    for key in list(state):
        prefix, _, leaf = key.rpartition('.')
        module = modules.get(prefix)
        if (leaf in INSTANCE_NORM_STATISTICS and isinstance(module, nn.modules.instancenorm._InstanceNorm)
                and getattr(module, leaf, None) is None):
            del state[key]
            dropped.append(key)
    return dropped



def load_network_state(net: nn.Module, state: dict, meta: dict) -> list[str]:
    """Load a network file's ``state`` into ``net`` strictly (through its ``load_checkpoint_state`` hook when it has
    one, e.g. MRNet's generator without its frozen SAM); returns the classic InstanceNorm statistics that had to be
    dropped for it to fit (see :func:`drop_instance_norm_statistics`). A mismatch raises the RuntimeError of the
    file as it is, so the caller can name every extra key."""
    def load(s: dict) -> None:
        if hasattr(net, 'load_checkpoint_state'):
            net.load_checkpoint_state(s, meta)
        else:
            net.load_state_dict(s, strict=True)
    try:
        load(state)
        return []
    except RuntimeError as mismatch:
        trimmed = dict(state)
        dropped = drop_instance_norm_statistics(net, trimmed)
        if not dropped:
            raise
        try:
            load(trimmed)
        except RuntimeError:
            raise mismatch from None
        return dropped


def define_G(input_nc: int, output_nc: int, ngf: int, netG: str, norm: str = 'batch', use_dropout: bool = False,
             init_type: str = 'normal', init_gain: float = 0.02, opt=None) -> nn.Module:
    """Build and initialise the generator named ``netG`` (one of GENERATORS); returns a CPU module.

    'sam_unet' (MRNet) is built by ``models.sam_unet.define_sam_unet``, which initialises itself; any other
    name by ``models.generators.define_generator`` (transunet, swin_unet, resvit, res_cnn, tcgan, ppt).
    """
    if netG == 'sam_unet':
        from .sam_unet import define_sam_unet
        return define_sam_unet(input_nc, output_nc, ngf, norm, use_dropout, init_type, init_gain, opt)
    norm_layer = get_norm_layer(norm)
    if netG == 'resnet_9blocks':
        net: nn.Module = ResnetGenerator(input_nc, output_nc, ngf, norm_layer, use_dropout, n_blocks=9)
    elif netG == 'resnet_6blocks':
        net = ResnetGenerator(input_nc, output_nc, ngf, norm_layer, use_dropout, n_blocks=6)
    elif netG == 'unet_128':
        net = UnetGenerator(input_nc, output_nc, 7, ngf, norm_layer, use_dropout)
    elif netG == 'unet_256':
        net = UnetGenerator(input_nc, output_nc, 8, ngf, norm_layer, use_dropout)
    else:  # the paper's baselines, one file each under models/generators/
        from .generators import define_generator
        return define_generator(netG, input_nc, output_nc, ngf, init_type, init_gain, opt, GENERATORS)
    return init_weights(net, init_type, init_gain)


# --------------------------------------------------------------------------- discriminators

class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, then two stride-1 ones, one logit per patch.

    n_layers=3 is the 70x70 PatchGAN: (N, input_nc, 256, 256) -> (N, 1, 30, 30).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm_layer: NormLayer = nn.BatchNorm2d):
        if n_layers < 1:
            raise ValueError(f'n_layers_D must be >= 1, got {n_layers}')
        super().__init__()
        use_bias = conv_bias_needed(norm_layer)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            next_width = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width, next_width, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                       norm_layer(next_width), nn.LeakyReLU(0.2, True)]
            width = next_width
        layers.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN (one logit per pixel): (N, input_nc, H, W) -> (N, 1, H, W)."""

    def __init__(self, input_nc: int, ndf: int = 64, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        use_bias = conv_bias_needed(norm_layer)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=use_bias), norm_layer(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=use_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def define_D(input_nc: int, ndf: int, netD: str, n_layers_D: int = 3, norm: str = 'batch',
             init_type: str = 'normal', init_gain: float = 0.02) -> nn.Module:
    """Build and initialise the discriminator named ``netD`` (one of DISCRIMINATORS); returns a CPU module.

    'basic': 70x70 PatchGAN (3 layers); 'n_layers': PatchGAN with ``n_layers_D`` layers; 'pixel': 1x1 PatchGAN.
    A conditional D (pix2pix, MRNet) takes input_nc + output_nc channels.
    """
    norm_layer = get_norm_layer(norm)
    if netD == 'basic':
        net: nn.Module = NLayerDiscriminator(input_nc, ndf, n_layers=3, norm_layer=norm_layer)
    elif netD == 'n_layers':
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_layer=norm_layer)
    elif netD == 'pixel':
        net = PixelDiscriminator(input_nc, ndf, norm_layer=norm_layer)
    else:
        raise ValueError(f'discriminator {netD!r} is not recognized; choose one of {_choices(DISCRIMINATORS)}')
    return init_weights(net, init_type, init_gain)


# --------------------------------------------------------------------------- losses

class GANLoss(nn.Module):
    """Adversarial objective on raw discriminator outputs (logits of any shape).

    'lsgan': mean (D - t)^2 (MRNet eq. 6 is the generator's term, t = 1); 'vanilla': binary cross-entropy with logits
    against t; 'wgangp': -mean D for real, +mean D for fake. t is ``target_real_label`` for
    real and ``target_fake_label`` for fake, broadcast to the prediction's shape.
    """

    def __init__(self, gan_mode: str, target_real_label: float = 1.0, target_fake_label: float = 0.0):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f'gan mode {gan_mode!r} is not implemented; choose one of {_choices(GAN_MODES)}')
        self.gan_mode = gan_mode
        self.register_buffer('real_label', torch.tensor(target_real_label))
        self.register_buffer('fake_label', torch.tensor(target_fake_label))
        losses = {'lsgan': nn.MSELoss(), 'vanilla': nn.BCEWithLogitsLoss(), 'wgangp': None}
        self.loss: nn.Module | None = losses[gan_mode]

    def get_target_tensor(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Label tensor shaped like ``prediction``, on its device and in its dtype."""
        label = self.real_label if target_is_real else self.fake_label
        return label.to(prediction).expand_as(prediction)

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Scalar loss for ``prediction`` judged against real (True) or fake (False)."""
        if self.loss is None:
            return -prediction.mean() if target_is_real else prediction.mean()
        return self.loss(prediction, self.get_target_tensor(prediction, target_is_real))


def cal_gradient_penalty(netD: nn.Module, real_data: torch.Tensor, fake_data: torch.Tensor, device: torch.device,
                         type: str = 'mixed', constant: float = 1.0,
                         lambda_gp: float = 10.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """WGAN-GP penalty lambda_gp * mean_n (||grad_x D(x_n)||_2 - constant)^2.

    x is ``real_data`` ('real'), ``fake_data`` ('fake') or a per-sample random mix of both
    ('mixed'). The graph is kept (create_graph=True), so backpropagating the penalty trains D.
    Returns (penalty as a 0-d tensor, gradients flattened to (N, C*H*W)); with lambda_gp == 0
    the penalty is 0 and the gradients are None.
    """
    if type not in GP_TYPES:
        raise ValueError(f'gradient penalty type {type!r} is not supported; choose one of {_choices(GP_TYPES)}')
    if lambda_gp <= 0.0:
        return torch.zeros((), device=device), None
    if type == 'real':
        points = real_data
    elif type == 'fake':
        points = fake_data
    else:
        alpha = torch.rand(real_data.shape[0], *([1] * (real_data.dim() - 1)), device=device)
        points = alpha * real_data + (1 - alpha) * fake_data
    points = points.detach().requires_grad_(True)
    scores = netD(points)
    gradients = torch.autograd.grad(outputs=scores, inputs=points, grad_outputs=torch.ones_like(scores),
                                    create_graph=True, retain_graph=True)[0]
    gradients = gradients.reshape(real_data.shape[0], -1)
    penalty = (((gradients + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp
    return penalty, gradients
