"""Tests for models/networks.py, models/layers.py and the classic generators: sizes, shapes, norms, init statistics,
losses, penalty, schedulers, errors."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from models import layers, networks
from models.generators import available_generators
from models.layers import conv_bias_needed, count_parameters, get_norm_layer, init_weights
from models.losses.gan import GANLoss, cal_gradient_penalty
from models.networks import define_D, define_G, get_scheduler


# ----------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('build, expected', [
    (lambda: define_G(3, 3, 64, 'unet_256', norm='batch'), 54_413_955),
    (lambda: define_G(3, 3, 64, 'resnet_9blocks', norm='instance'), 11_378_179),
    (lambda: define_D(3, 64, 'basic', norm='instance'), 2_764_737),
    (lambda: define_D(6, 64, 'basic', norm='batch'), 2_768_705),
])
def test_parameter_counts_match_classic_toolkit(build, expected):
    assert count_parameters(build()) == expected


def test_count_parameters_trainable_only():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net[0].requires_grad_(False)
    assert count_parameters(net) == 8 + 3
    assert count_parameters(net, trainable_only=True) == 3


# ----------------------------------------------------------------------------- shapes

@pytest.mark.parametrize('netG, size', [('unet_128', 128), ('unet_256', 256), ('resnet_6blocks', 36),
                                        ('resnet_9blocks', 40)])
def test_generator_output_shape_and_range(netG, size):
    torch.manual_seed(0)
    net = define_G(2, 1, 4, netG, norm='instance', use_dropout=True)
    with torch.no_grad():
        out = net(torch.randn(2, 2, size, size))
    assert out.shape == (2, 1, size, size)
    assert out.abs().max() <= 1.0


def test_unet_accepts_rectangular_multiples():
    net = define_G(1, 1, 2, 'unet_128', norm='batch').eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 128, 256)).shape == (1, 1, 128, 256)


@pytest.mark.parametrize('netD, size, expected', [('basic', 256, (2, 1, 30, 30)), ('n_layers', 64, (2, 1, 14, 14)),
                                                  ('pixel', 20, (2, 1, 20, 20))])
def test_discriminator_output_shape(netD, size, expected):
    net = define_D(4, 4, netD, n_layers_D=2, norm='batch')
    with torch.no_grad():
        assert net(torch.randn(2, 4, size, size)).shape == expected


def test_n_layers_D_changes_depth():
    shallow = define_D(3, 8, 'n_layers', n_layers_D=1)
    deep = define_D(3, 8, 'n_layers', n_layers_D=4)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert shallow(x).shape == (1, 1, 30, 30)  # 64 -> 32 -> 31 -> 30
        assert deep(x).shape == (1, 1, 2, 2)       # 64 -> 32 -> 16 -> 8 -> 4 -> 3 -> 2


# ----------------------------------------------------------------------------- norms

@pytest.mark.parametrize('norm, layer_type', [('batch', nn.BatchNorm2d), ('instance', nn.InstanceNorm2d),
                                              ('syncbatch', layers.SyncBatchNorm), ('none', nn.Identity)])
def test_each_norm_builds_and_runs(norm, layer_type):
    net = define_G(3, 3, 4, 'resnet_6blocks', norm=norm)
    assert any(type(m) is layer_type for m in net.modules())
    out = net(torch.randn(2, 3, 16, 16))
    out.mean().backward()
    assert out.shape == (2, 3, 16, 16)
    assert define_D(6, 4, 'basic', norm=norm)(torch.randn(2, 6, 64, 64)).shape == (2, 1, 6, 6)


def test_norm_layer_settings_and_conv_bias():
    batch, instance = get_norm_layer('batch')(5), get_norm_layer('instance')(5)
    assert batch.affine and batch.track_running_stats
    assert not instance.affine and not instance.track_running_stats
    sync = get_norm_layer('syncbatch')(5)
    assert sync.affine and sync.track_running_stats
    # not an nn.SyncBatchNorm: DistributedDataParallel refuses CPU modules that contain one
    assert not isinstance(sync, nn.SyncBatchNorm)
    # batch norm brings its own shift, so the conv before it has no bias; the others keep it
    assert [conv_bias_needed(get_norm_layer(n)) for n in ('batch', 'syncbatch', 'instance', 'none')] \
        == [False, False, True, True]


def test_syncbatch_equals_batchnorm_without_process_group():
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    sync, plain = get_norm_layer('syncbatch')(3), get_norm_layer('batch')(3)
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync.running_mean, plain.running_mean)
    sync.eval(), plain.eval()
    torch.testing.assert_close(sync(x), plain(x))


def test_syncbatch_runs_on_cpu_under_a_process_group(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        x = torch.randn(4, 3, 5, 5)
        with pytest.raises(ValueError):  # what PyTorch's own layer does with CPU input here
            nn.SyncBatchNorm(3)(x)
        out = get_norm_layer('syncbatch')(3)(x)
        torch.testing.assert_close(out, nn.BatchNorm2d(3)(x))
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- init

def _conv_weight(init_type, gain, out=64, inp=64):
    torch.manual_seed(0)
    net = init_weights(nn.Sequential(nn.Conv2d(inp, out, 4), nn.BatchNorm2d(out)), init_type, gain)
    return net[0], net[1]


def test_normal_init_statistics():
    conv, bn = _conv_weight('normal', 0.02)
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert conv.weight.mean().abs().item() < 0.001
    assert torch.count_nonzero(conv.bias) == 0
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert torch.count_nonzero(bn.bias) == 0


def test_xavier_and_kaiming_init_statistics():
    conv, _ = _conv_weight('xavier', 0.5)
    fan = 64 * 16
    assert conv.weight.std().item() == pytest.approx(0.5 * math.sqrt(2.0 / (fan + fan)), rel=0.03)
    conv, _ = _conv_weight('kaiming', 0.02)  # gain is not used by kaiming
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan), rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0


def test_orthogonal_init_rows_are_orthogonal():
    conv, _ = _conv_weight('orthogonal', 0.02, out=32, inp=8)
    w = conv.weight.reshape(32, -1)  # 32 x 128: rows orthogonal with norm gain
    torch.testing.assert_close(w @ w.T, 0.02 ** 2 * torch.eye(32), atol=1e-7, rtol=0)
    assert torch.count_nonzero(conv.bias) == 0


def test_init_applies_to_linear_and_transposed_conv():
    net = init_weights(nn.Sequential(nn.Linear(500, 400), nn.ConvTranspose2d(64, 64, 4)), 'normal', 0.05)
    for m in net:
        assert m.weight.std().item() == pytest.approx(0.05, rel=0.03)
        assert torch.count_nonzero(m.bias) == 0


# ----------------------------------------------------------------------------- GAN losses

PRED = torch.tensor([[0.5, -1.0], [2.0, 0.0]])


def test_lsgan_loss_by_hand():
    loss = GANLoss('lsgan')
    assert loss(PRED, True).item() == pytest.approx(((0.5 - 1) ** 2 + 4 + 1 + 1) / 4)
    assert loss(PRED, False).item() == pytest.approx((0.25 + 1 + 4 + 0) / 4)
    smoothed = GANLoss('lsgan', target_real_label=0.9)
    assert smoothed(PRED, True).item() == pytest.approx((0.16 + 1.9 ** 2 + 1.1 ** 2 + 0.81) / 4)


def test_vanilla_loss_by_hand():
    def softplus(v):
        return math.log1p(math.exp(v))
    values = PRED.flatten().tolist()
    loss = GANLoss('vanilla')
    assert loss(PRED, True).item() == pytest.approx(sum(softplus(-v) for v in values) / 4)
    assert loss(PRED, False).item() == pytest.approx(sum(softplus(v) for v in values) / 4)


def test_wgangp_loss_by_hand():
    loss = GANLoss('wgangp')
    assert loss(PRED, True).item() == pytest.approx(-0.375)
    assert loss(PRED, False).item() == pytest.approx(0.375)


def test_gan_loss_labels_are_buffers_and_follow_dtype():
    loss = GANLoss('lsgan').double()
    assert {name for name, _ in loss.named_buffers()} == {'real_label', 'fake_label'}
    pred = torch.zeros(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    value = loss(pred, True)
    assert value.dtype == torch.float64 and value.item() == pytest.approx(1.0)
    value.backward()
    torch.testing.assert_close(pred.grad, torch.full_like(pred, -2.0 / 18))


# ----------------------------------------------------------------------------- gradient penalty

class LinearD(nn.Module):
    """D(x) = sum(w * x) per sample: the gradient is w at every x."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize('gp_type', ['real', 'fake', 'mixed'])
def test_gradient_penalty_of_linear_discriminator(gp_type):
    torch.manual_seed(0)
    w = torch.randn(1, 2, 3, 3)
    netD = LinearD(w.clone())
    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    penalty, gradients = cal_gradient_penalty(netD, real, fake, torch.device('cpu'), type=gp_type, lambda_gp=10.0)
    expected = 10.0 * (w.norm() - 1.0) ** 2
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(gradients, w.flatten().expand(4, -1))
    # create_graph=True: the penalty has a gradient with respect to D's weights
    penalty.backward()
    expected_grad = 10.0 * 2 * (w.norm() - 1.0) * w / w.norm()
    torch.testing.assert_close(netD.w.grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_zero_when_gradient_has_unit_norm_and_when_disabled():
    w = torch.zeros(1, 1, 2, 2)
    w[0, 0, 0, 0] = 1.0
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    penalty, _ = cal_gradient_penalty(LinearD(w), real, fake, torch.device('cpu'))
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)
    penalty, gradients = cal_gradient_penalty(LinearD(w), real, fake, torch.device('cpu'), lambda_gp=0.0)
    assert penalty.item() == 0.0 and gradients is None


def test_gradient_penalty_trains_a_patch_discriminator():
    torch.manual_seed(0)
    netD = define_D(2, 4, 'basic', norm='none')
    real, fake = torch.rand(2, 2, 32, 32), torch.rand(2, 2, 32, 32)
    penalty, _ = cal_gradient_penalty(netD, real, fake, torch.device('cpu'))
    assert penalty.item() > 0
    penalty.backward()
    # (biases do not change grad_x D, so only the weights receive a gradient)
    weights = [p for name, p in netD.named_parameters() if name.endswith('weight')]
    assert len(weights) == 5 and all(p.grad.abs().sum() > 0 for p in weights)


# ----------------------------------------------------------------------------- schedulers

def _lrs(policy, epochs, metrics=None, **fields):
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = get_scheduler(optimizer, SimpleNamespace(lr_policy=policy, **fields))
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        if metrics:
            scheduler.step(metrics[epoch])
        else:
            scheduler.step()
    return lrs


def test_linear_scheduler():
    lrs = _lrs('linear', 4, n_epochs=2, n_epochs_decay=2, epoch_count=1)
    assert lrs == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3])
    # resuming at epoch 3 (epoch_count=3) starts inside the decay
    assert _lrs('linear', 2, n_epochs=2, n_epochs_decay=2, epoch_count=3) == pytest.approx([2 / 3, 1 / 3])


def test_step_scheduler():
    assert _lrs('step', 5, lr_decay_iters=2) == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_cosine_scheduler():
    expected = [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(5)]
    assert _lrs('cosine', 5, n_epochs=4) == pytest.approx(expected)


def test_plateau_scheduler():
    # an improvement must beat the best by 1% (0.975 after 0.98 does not); after 6 bad epochs (> patience 5) lr x0.2
    metrics = [1.0, 0.98, 0.975, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98]
    assert _lrs('plateau', 9, metrics=metrics) == pytest.approx([1.0] * 8 + [0.2])


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize('size', [(100, 120), (256, 300), (128, 128)])
def test_unet_size_error_names_valid_sizes(size):
    net = define_G(1, 1, 2, 'unet_256')
    with pytest.raises(ValueError) as err:
        net(torch.zeros(1, 1, *size))
    assert f'unet_256 needs height and width that are multiples of 256 (256, 512, ...); got {size[0]}x{size[1]}' \
        in str(err.value)


@pytest.mark.parametrize('netG', ['unet_128', 'resnet_6blocks'])
def test_generator_channel_error(netG):
    net = define_G(3, 3, 2, netG)
    with pytest.raises(ValueError, match=r'the network expects input_nc=3 channels, got 1: set --input_nc'):
        net(torch.zeros(1, 1, 128, 128))
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        net(torch.zeros(3, 128, 128))


@pytest.mark.parametrize('call, names', [
    (lambda: define_G(3, 3, 8, 'unet_64'), available_generators()),
    (lambda: define_D(3, 8, 'multiscale'), networks.DISCRIMINATORS),
    (lambda: get_norm_layer('group'), layers.NORM_TYPES),
    (lambda: init_weights(nn.Linear(2, 2), 'uniform'), layers.INIT_TYPES),
    (lambda: GANLoss('hinge'), networks.GAN_MODES),
    (lambda: get_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0),
                           SimpleNamespace(lr_policy='exponential')), networks.LR_POLICIES),
    (lambda: cal_gradient_penalty(LinearD(torch.ones(1)), torch.ones(2, 1), torch.ones(2, 1), 'cpu', type='both'),
     networks.GP_TYPES),
])
def test_unknown_names_list_the_valid_ones(call, names):
    with pytest.raises(ValueError) as err:
        call()
    for name in names:
        assert repr(name) in str(err.value)


def test_sam_unet_is_delegated(monkeypatch):
    from models.generators import sam_unet
    calls = []
    monkeypatch.setattr(sam_unet, 'define_sam_unet', lambda *args: calls.append(args) or nn.Identity())
    opt = SimpleNamespace()
    net = define_G(3, 3, 16, 'sam_unet', 'instance', True, 'xavier', 0.1, opt)
    assert isinstance(net, nn.Identity)
    (args,) = calls
    assert args[:7] == (3, 3, 16, 'instance', True, 'xavier', 0.1)
    assert args[7].n_masks == 2 and args[7].sam_model_type == 'vit_b'   # the generator's flags at their defaults
