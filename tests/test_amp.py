"""Training at the GPU's speed, checked on the CPU (models/amp.py, data/__init__.py, evaluation/validation.py): --amp
bf16 trains every model close to fp32, fp16's GradScaler skips an inf step and recovers, resume under amp is
bit-identical, amp checkpoints are float32 and load in fp32 runs and in predict, persistent workers give the batches
of fresh ones, and validation reads SAM features from the cache."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data.demo_data as demo
from data import create_dataset
from generator_fixtures import TINY as TINY_GENERATORS
from models import create_model
from models.amp import resolve_amp
from inference.loading import load_generator
from evaluation.validation import Validator
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.checkpoint import read_network_file
from util.seed import worker_init_fn

TINY_SAM = ['--sam_input_size', '64', '--sam_embed_dim', '32', '--sam_depth', '2', '--sam_num_heads', '2',
            '--sam_global_attn_indexes', '1']
# model -> (image side, flags): every model and each baseline generator in pix2pix's cGAN, tiny
MODELS = {
    'mrnet': (256, ['--model', 'mrnet', '--ngf', '4', '--ndf', '4', *TINY_SAM]),
    'pix2pix': (128, ['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '4', '--ndf', '4']),
    'cycle_gan': (32, ['--model', 'cycle_gan', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4',
                       '--n_layers_D', '1']),
    **{name: (size, ['--model', 'pix2pix', '--netG', name, '--ndf', '4', '--n_layers_D', '1', '--gan_mode', 'lsgan',
                     *flags]) for name, (size, flags) in TINY_GENERATORS.items() if name != 'res_cnn'},
}
# bf16 keeps 8 significant bits; Adam's first update is nearly lr * sign(gradient), so a gradient component that
# bf16 rounds across zero moves its weight by a full lr: in the first two steps from the same seed every loss is
# within 5 % or 0.02 of fp32's (measured: small discriminator losses, ~0.05, move most, by up to 0.011)
REL_TOL, ABS_TOL = 0.05, 0.02


@pytest.fixture(autouse=True)
def quiet_random_sam(monkeypatch):
    from models.encoders import sam_encoder
    monkeypatch.setattr(sam_encoder, '_random_sam_warned', True)


def train_opt(tmp_path: Path, flags: list[str], *extra: str):
    args = [*flags, '--name', 'amp', '--checkpoints_dir', str(tmp_path / 'checkpoints'), '--gpu_ids', '-1',
            '--display_id', '0', '--batch_size', '1', *extra]
    return TrainOptions().parse(args, setup_device=False)


def make(tmp_path: Path, flags: list[str], *extra: str, seed: int = 0):
    torch.manual_seed(seed)
    opt = train_opt(tmp_path, flags, *extra)
    model = create_model(opt)
    model.setup(opt)
    return model


def pair(size: int, n: int = 1, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, size, size, generator=gen) * 1.8 - 0.9
    return {'A': a, 'B': -a, 'A_paths': [f'a{i}' for i in range(n)], 'B_paths': [f'b{i}' for i in range(n)]}


def losses_of(model, batch: dict, steps: int) -> list[dict]:
    out = []
    for _ in range(steps):
        model.set_input(batch)
        model.train_step()
        out.append(dict(model.get_current_losses()))
    return out


def weights(model) -> dict[str, torch.Tensor]:
    return {f'{n}.{k}': v.detach().clone() for n in model.model_names for k, v in model.unwrap(n).state_dict().items()}


def test_amp_auto_is_off_on_the_cpu():
    assert resolve_amp('auto', torch.device('cpu')) == 'off'
    assert resolve_amp('fp16', torch.device('cpu')) == 'fp16'
    with pytest.raises(ValueError, match='--amp must be one of auto, off, bf16, fp16'):
        resolve_amp('fp8', torch.device('cpu'))


@pytest.mark.parametrize('name', MODELS)
def test_bf16_trains_every_model_close_to_fp32(tmp_path, name):
    """One training step of each model and generator from the same seed: its losses (the bf16 forward passes)
    within the tolerance of fp32's, float32 weights that moved and stay finite. (pix2pix takes two: the second
    step's losses also see a bf16 update.) Several steps under fp16 follow below."""
    size, flags = MODELS[name]
    flags = [*flags, '--crop_size', str(size), '--load_size', str(size)]
    batch = pair(size)
    steps = 2 if name == 'pix2pix' else 1
    fp32 = losses_of(make(tmp_path, flags, '--amp', 'off'), batch, steps)
    model = make(tmp_path, flags, '--amp', 'bf16')
    before = weights(model)
    bf16 = losses_of(model, batch, steps)
    assert model.precision.dtype is torch.bfloat16 and model.precision.scaler is None
    after = weights(model)
    assert any(not torch.equal(before[k], after[k]) for k in before), 'bf16 did not train'
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    for step, (a, b) in enumerate(zip(fp32, bf16)):
        for key in a:
            assert math.isfinite(b[key]) and abs(b[key] - a[key]) <= REL_TOL * abs(a[key]) + ABS_TOL, (step, key, a, b)
    assert any(a[k] != b[k] for a, b in zip(fp32, bf16) for k in a), 'bf16 gave fp32 losses bit for bit: no autocast'
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())


def test_layers_that_stay_float32_under_bf16():
    """Under bf16 autocast: SoftClamp keeps its 0.001 slope (bf16 would round 1.0005 to 1), the masks and their
    products are float32, and the GAN loss of a bf16 map is float32 and exact."""
    from models.generators.sam_unet import MaskModule, SoftClamp
    from models.layers import get_norm_layer
    from models.losses.gan import GANLoss
    with torch.autocast('cpu', dtype=torch.bfloat16):
        clamped = SoftClamp()(torch.tensor([-0.5, 0.25, 1.5], dtype=torch.bfloat16))
        steps, masks = MaskModule(2, 3, 4, get_norm_layer('instance'))(torch.rand(1, 3, 8, 8).bfloat16())
        prediction = torch.tensor([0.5, 1.5, 3.0], dtype=torch.bfloat16)
        loss = GANLoss('lsgan')(prediction, True)
    assert clamped.dtype == torch.float32
    assert torch.allclose(clamped, torch.tensor([-0.0005, 0.25, 1.0005]), rtol=0, atol=1e-7)
    assert all(t.dtype == torch.float32 for t in steps + masks)
    assert torch.equal(steps[2], steps[0] * masks[0] * masks[1])
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx((0.25 + 0.25 + 4.0) / 3, abs=1e-7)


FP16_SIDE = 128


def fp16_pix2pix(tmp_path, seed: int = 0):
    """The tiny pix2pix (unet_128) under --amp fp16, without dropout."""
    size, flags = MODELS['pix2pix']
    return make(tmp_path, [*flags, '--crop_size', str(size), '--load_size', str(size), '--no_dropout'],
                '--amp', 'fp16', seed=seed)


def poison_next_step(model) -> None:
    """The next backward gives the generator's first weight an inf gradient (once)."""
    param = next(model.netG.parameters())

    def hook(grad):
        handle.remove()
        return grad * math.inf
    handle = param.register_hook(hook)


def test_fp16_skips_a_step_with_an_inf_gradient_and_recovers(tmp_path):
    model = fp16_pix2pix(tmp_path)
    scaler = model.precision.scaler
    start = scaler.get_scale()
    g0 = [p.detach().clone() for p in model.netG.parameters()]
    d0 = [p.detach().clone() for p in model.netD.parameters()]
    poison_next_step(model)
    losses_of(model, pair(FP16_SIDE), 1)
    assert all(torch.equal(a, b) for a, b in zip(g0, model.netG.parameters())), 'G stepped on an inf gradient'
    assert not model.optimizer_G.state                         # Adam never ran for G: no moments, no step count
    assert not all(torch.equal(a, b) for a, b in zip(d0, model.netD.parameters())), 'D (finite) did not step'
    assert scaler.get_scale() == start * 0.5                   # backoff factor 0.5 after the skipped step
    after = losses_of(model, pair(FP16_SIDE), 2)
    assert not all(torch.equal(a, b) for a, b in zip(g0, model.netG.parameters())), 'G did not recover'
    assert scaler.get_scale() == start * 0.5 and all(math.isfinite(v) for s in after for v in s.values())


def test_resume_under_fp16_is_bit_identical(tmp_path):
    """1 + 2 steps through save_training_state / load_training_state equal 3 uninterrupted steps, loss scale
    included (the first step's inf gradient halves it, so a fresh scaler would differ)."""
    batches = [pair(FP16_SIDE, seed=s) for s in range(3)]
    full = fp16_pix2pix(tmp_path / 'full')
    poison_next_step(full)
    for b in batches:
        losses_of(full, b, 1)
    first = fp16_pix2pix(tmp_path / 'cut')
    poison_next_step(first)
    losses_of(first, batches[0], 1)
    first.save_training_state('latest', {'epoch': 1, 'epoch_iter': 1, 'total_iters': 1})
    resumed = fp16_pix2pix(tmp_path / 'cut', seed=99)          # another init, replaced by the checkpoint
    assert resumed.load_training_state('latest')['total_iters'] == 1
    assert resumed.precision.scaler.get_scale() == first.precision.scaler.get_scale() == 32768.0
    for b in batches[1:]:
        losses_of(resumed, b, 1)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.precision.scaler.state_dict() == full.precision.scaler.state_dict()


def test_amp_checkpoints_are_float32_and_load_in_fp32_runs_and_predict(tmp_path):
    size, flags = MODELS['mrnet']
    model = make(tmp_path, flags, '--amp', 'bf16')
    losses_of(model, pair(size), 1)
    model.save_networks('latest')
    state, _, options = read_network_file(str(tmp_path / 'checkpoints' / 'amp' / 'latest_net_G.pth'))
    assert options['amp'] == 'bf16' and all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    x = pair(size, seed=3)['A']
    net = model.unwrap('G').eval()
    with torch.no_grad():
        want = net(x)                                          # the trained weights in fp32, without autocast
    test_opt = TestOptions().parse([*flags, '--name', 'amp', '--checkpoints_dir', str(tmp_path / 'checkpoints'),
                                    '--gpu_ids', '-1', '--eval'], setup_device=False)
    tested = create_model(test_opt)
    tested.setup(test_opt)
    tested.eval()
    predictor = load_generator(str(tmp_path / 'checkpoints'), 'amp')
    with torch.no_grad():
        assert torch.equal(tested.netG(x), want)
        assert torch.equal(predictor.net(x), want)


def write_aligned(root: Path, n: int = 4, side: int = 40) -> Path:
    rng = np.random.default_rng(0)
    (root / 'train').mkdir(parents=True)
    for i in range(n):
        ab = rng.integers(0, 256, (side, 2 * side, 3), dtype=np.uint8)
        Image.fromarray(ab).save(root / 'train' / f'{i}.png')
    return root


def test_persistent_workers_give_the_batches_of_fresh_workers(tmp_path):
    """Random crops and flips in 2 workers, 2 epochs: the loader (persistent workers, prefetching, reseeded per
    epoch) gives exactly the batches of a DataLoader that starts new workers seeded as before every epoch, a
    resumed epoch (its first batch skipped) included."""
    root = write_aligned(tmp_path / 'aligned')
    opt = train_opt(tmp_path, ['--model', 'pix2pix', '--dataroot', str(root), '--load_size', '36', '--crop_size', '32',
                               '--num_threads', '2'], '--batch_size', '2')
    loader = create_dataset(opt)
    assert loader.dataloader.persistent_workers and loader.dataloader.prefetch_factor == 4
    ours, before = [], []
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        ours.append([b['A'] for b in loader])
    workers = loader.dataloader._iterator._workers
    loader.set_epoch(2, 1)
    tail = [b['A'] for b in loader]
    assert loader.dataloader._iterator._workers == workers     # the same worker processes throughout
    for epoch, skip in ((1, 0), (2, 0), (2, 1)):               # the loop before this change
        loader.sampler.set_epoch(epoch)
        loader.skipping.skip = skip * 2
        gen = torch.Generator().manual_seed(opt.seed + 100003 * epoch)
        fresh = torch.utils.data.DataLoader(loader.dataset, batch_size=2, sampler=loader.skipping, num_workers=2,
                                            worker_init_fn=worker_init_fn, generator=gen)
        before.append([b['A'] for b in fresh])
    assert len(ours[0]) == 2 and any(not torch.equal(a, b) for a, b in zip(*ours))   # epochs differ
    for mine, theirs in zip([*ours, tail], before, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    assert len(tail) == 1


def test_validation_reads_sam_features_from_the_cache(tmp_path, monkeypatch):
    """The val split's SAM features are computed once (building the cache) and read in every later pass: the
    second validation makes no SAM call and scores the same."""
    with pytest.MonkeyPatch.context() as mp:                   # three 12 x 14 x 10 subjects: one per split
        mp.setattr(demo, 'SHAPE', (12, 14, 10))
        demo.make_synthrad(str(tmp_path / 'data'), 3, 2024)
    size, flags = MODELS['mrnet']
    model = make(tmp_path, flags, '--dataroot', str(tmp_path / 'data'), '--planes', 'z', '--num_threads', '0',
                 '--val_freq', '1', '--sam_batch_size', '4')
    validator = Validator(model.opt)
    from models.encoders.sam_encoder import SamFeatureEncoder
    calls = []
    forward = SamFeatureEncoder.forward
    monkeypatch.setattr(SamFeatureEncoder, 'forward', lambda self, x: calls.append(len(x)) or forward(self, x))
    first, _ = validator.score(model)
    n_slices = len(validator.loader)
    assert sum(calls) == n_slices and max(calls) <= 4          # built in batches of --sam_batch_size, once
    calls.clear()
    second, _ = validator.score(model)
    assert calls == [] and second == first
