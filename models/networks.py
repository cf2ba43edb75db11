"""What every model shares that is not a generator: ``define_G`` (which finds the generator by its ``--netG``
name in models/generators/), the PatchGAN / pixel discriminators and ``define_D``, the GAN objectives and the
WGAN-GP gradient penalty, learning-rate schedulers and the loading of a network file into a network.

Images are tensors (N, C, H, W) in [-1, 1]. The discriminators and their parameter counts match the classic
pix2pix/CycleGAN toolkit for the same options; the layers they share with the generators are in models/layers.py."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

from .generators import define_generator
from .layers import NormLayer, choices, conv_bias_needed, get_norm_layer, init_weights

LR_POLICIES = ('linear', 'step', 'plateau', 'cosine')
DISCRIMINATORS = ('basic', 'n_layers', 'pixel')
GAN_MODES = ('lsgan', 'vanilla', 'wgangp')
GP_TYPES = ('real', 'fake', 'mixed')


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
    raise ValueError(f'learning rate policy {policy!r} is not supported; choose one of {choices(LR_POLICIES)}')


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
    """Build and initialise the generator named ``netG`` (a file of models/generators/, found by name); returns a
    CPU module. ``opt`` carries the generator's own flags (SAM for sam_unet, the baselines' sizes and weights)."""
    return define_generator(netG, input_nc, output_nc, ngf, norm, use_dropout, init_type, init_gain, opt)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4x4 convs, then two stride-1 ones, one logit per patch.

    n_layers=3 is the 70x70 PatchGAN: (N, input_nc, 256, 256) -> (N, 1, 30, 30). With ``conv=nn.Conv3d`` (and a 3D
    ``norm_layer``) the same layers judge 3D patches: (N, input_nc, 64, 64, 64) -> (N, 1, 6, 6, 6).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm_layer: NormLayer = nn.BatchNorm2d,
                 conv: type[nn.Module] = nn.Conv2d):
        if n_layers < 1:
            raise ValueError(f'n_layers_D must be >= 1, got {n_layers}')
        super().__init__()
        use_bias = conv_bias_needed(norm_layer)
        layers: list[nn.Module] = [conv(input_nc, ndf, kernel_size=4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            next_width = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [conv(width, next_width, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                       norm_layer(next_width), nn.LeakyReLU(0.2, True)]
            width = next_width
        layers.append(conv(width, 1, kernel_size=4, stride=1, padding=1))
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


def norm_layer_3d(norm: str) -> NormLayer:
    """``--norm`` for Conv3d layers: get_norm_layer's batch and instance norms in 3D with the same settings
    (syncbatch and none take any dimension as they are)."""
    layer = get_norm_layer(norm)
    to_3d = {nn.BatchNorm2d: nn.BatchNorm3d, nn.InstanceNorm2d: nn.InstanceNorm3d}
    if isinstance(layer, functools.partial) and layer.func in to_3d:
        return functools.partial(to_3d[layer.func], *layer.args, **layer.keywords)
    return layer


def define_D(input_nc: int, ndf: int, netD: str, n_layers_D: int = 3, norm: str = 'batch',
             init_type: str = 'normal', init_gain: float = 0.02, dims: int = 2) -> nn.Module:
    """Build and initialise the discriminator named ``netD`` (one of DISCRIMINATORS); returns a CPU module.

    'basic': 70x70 PatchGAN (3 layers); 'n_layers': PatchGAN with ``n_layers_D`` layers; 'pixel': 1x1 PatchGAN.
    A conditional D (pix2pix, MRNet) takes input_nc + output_nc channels. ``dims=3``: the PatchGANs with Conv3d
    on (N, C, X, Y, Z) patches (--model unet3d); 'pixel' is 2D only.
    """
    if dims == 3:
        if netD not in ('basic', 'n_layers'):
            raise ValueError(f'discriminator {netD!r} has no 3D version; choose \'basic\' or \'n_layers\'')
        net3d = NLayerDiscriminator(input_nc, ndf, 3 if netD == 'basic' else n_layers_D, norm_layer_3d(norm),
                                    conv=nn.Conv3d)
        return init_weights(net3d, init_type, init_gain)
    norm_layer = get_norm_layer(norm)
    if netD == 'basic':
        net: nn.Module = NLayerDiscriminator(input_nc, ndf, n_layers=3, norm_layer=norm_layer)
    elif netD == 'n_layers':
        net = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_layer=norm_layer)
    elif netD == 'pixel':
        net = PixelDiscriminator(input_nc, ndf, norm_layer=norm_layer)
    else:
        raise ValueError(f'discriminator {netD!r} is not recognized; choose one of {choices(DISCRIMINATORS)}')
    return init_weights(net, init_type, init_gain)
