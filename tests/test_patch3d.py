"""The 3D row's training side: patches of --dataset_mode patch3d (place, foreground rate, padding), the nnU-Net plan
of --netG unet3d (by hand, and refused at parse time with the nearest valid size) and --model unet3d's training
(bit-identical resume, options stored in the checkpoint, mid-slices on the HTML page)."""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import train
from data.patch3d_dataset import Patch3dDataset
from data.splits import write_splits
from evaluation.comparison.flops import training_step_flops
from evaluation.validation import Validator
from models.generators import define_generator
from models.generators.unet3d import Unet3d, nearest_valid, plan
from options.train_options import TrainOptions
from test_checkpoint_unit import assert_same, timeless
from util.checkpoint import read_network_file, safe_load
from util.cli import run_cli
from util.training_log import LOG_NAME, read_training_log
from volume_fixtures import phantom, synthrad_root, write_subject

BASE = ['--model', 'unet3d', '--gpu_ids', '-1', '--num_threads', '0', '--ngf', '4', '--cache_dtype', 'float32']


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny 3D convolutions run fastest on one thread; two spin-wait for each other on a busy machine (10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def patch_dataset(root: Path, *args: str) -> Patch3dDataset:
    opt = TrainOptions().parse([*BASE, '--dataroot', str(root), '--checkpoints_dir', str(root.parent / 'ck'), *args],
                               setup_device=False)
    return Patch3dDataset(opt)


def subject_root(tmp_path: Path, volumes: dict[str, np.ndarray]) -> Path:
    root = tmp_path / 'data'
    write_subject(root, 's', volumes)
    write_splits(str(root), {'train': ['s']})
    return root


def ramp(shape: tuple[int, int, int]) -> np.ndarray:
    """CT in HU whose value names its voxel: -1000 + 100 x + 4 y + 0.2 z (y < 25, z < 20)."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing='ij')
    return (-1000 + 100 * x + 4 * y + 0.2 * z).astype(np.float32)


def hu(normalised: torch.Tensor) -> torch.Tensor:
    """[-1, 1] back to HU through the default CT window [-1024, 3000]."""
    return (normalised.double() + 1) * 2012 - 1024


def test_patches_come_from_the_place_their_values_name(tmp_path):
    shape = (30, 20, 18)
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, np.uint8)
    mask[10:20, 5:15, 4:14] = 1
    root = subject_root(tmp_path, {'ct': ramp(shape), 'mr': rng.uniform(100, 900, shape).astype(np.float32),
                                   'mask': mask})
    ds = patch_dataset(root, '--patch_size', '16', '--foreground_share', '0.5', '--body_margin_voxels', '0')
    origins = set()
    for i in range(40):
        torch.manual_seed(i)
        item = ds[0]
        b = hu(item['B'][0])
        first = float(b[0, 0, 0]) + 1000           # 100 x0 + 4 y0 + 0.2 z0, read off the patch alone
        x0 = int((first + 0.01) // 100)
        y0 = int((first - 100 * x0 + 0.01) // 4)
        z0 = round((first - 100 * x0 - 4 * y0) / 0.2)
        assert 0 <= x0 <= 14 and 0 <= y0 <= 4 and 0 <= z0 <= 2          # inside: no padding needed here
        assert item['origin'].tolist() == [x0, y0, z0]
        expected = torch.from_numpy(ramp(shape)[x0:x0 + 16, y0:y0 + 16, z0:z0 + 16]).double()
        assert torch.allclose(b, expected, atol=0.01)
        assert torch.equal(item['mask'][0], torch.from_numpy(mask[x0:x0 + 16, y0:y0 + 16, z0:z0 + 16] > 0))
        assert item['A'].shape == (1, 16, 16, 16)
        origins.add((x0, y0, z0))
    assert len(origins) > 10


def test_foreground_share_is_the_rate_of_patches_on_the_body(tmp_path):
    """Body: the slab x < 4 of a 64 x 8 x 8 volume; patches 16 x 8 x 8. A uniform patch starts at x = 0..48 and
    holds body iff it starts at x <= 3 (4 of 49); a foreground patch always holds it. So the rate of patches
    holding body is share + (1 - share) 4 / 49, within 4 binomial standard deviations."""
    mask = np.zeros((64, 8, 8), np.uint8)
    mask[:4] = 1
    ph = {'ct': np.where(mask, 40.0, -1000.0).astype(np.float32),
          'mr': np.where(mask, 500.0, 10.0).astype(np.float32) + np.arange(8, dtype=np.float32), 'mask': mask}
    root = subject_root(tmp_path, ph)
    torch.manual_seed(0)
    for share, n in ((1 / 3, 600), (0.0, 300), (1.0, 60)):
        ds = patch_dataset(root, '--patch_size', '16x8x8', '--foreground_share', str(share),
                           '--body_margin_voxels', '0')
        hits = sum(bool(ds[0]['mask'].any()) for _ in range(n))
        p = share + (1 - share) * 4 / 49
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(hits / n - p) <= 4 * sd + 1e-9, (share, hits / n, p)


def test_a_volume_smaller_than_the_patch_is_padded_evenly_with_air(tmp_path):
    vols = phantom((12, 13, 10))                                    # patch 16: 4, 3 and 6 voxels short
    root = subject_root(tmp_path, vols)
    ds = patch_dataset(root, '--patch_size', '16', '--body_margin_voxels', '0')
    item = ds[0]
    assert item['origin'].tolist() == [-2, -1, -3]                  # (16 - n) // 2 before, the odd voxel after
    inside = (slice(2, 14), slice(1, 14), slice(3, 13))
    ct = np.clip((vols['ct'] + 1024) * (2 / 4024) - 1, -1, 1)
    assert torch.allclose(item['B'][0][inside], torch.from_numpy(ct), atol=1e-5)
    assert torch.equal(item['mask'][0][inside], torch.from_numpy(vols['mask'] > 0))
    outside = torch.ones(16, 16, 16, dtype=torch.bool)
    outside[inside] = False
    for field in ('A', 'B'):
        assert (item[field][0][outside] == -1).all()
    assert not item['mask'][0][outside].any()


def test_the_plan_of_kernels_and_strides_by_hand():
    # 32^3 at 1 mm: halve every axis while it is >= 8: 32 -> 16 -> 8 -> 4, three times; 3x3x3 kernels throughout
    iso = plan((32, 32, 32), (1.0, 1.0, 1.0))
    assert iso.strides == [(1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert iso.kernels == [(3, 3, 3)] * 4 and iso.divisor == (8, 8, 8)
    # 32 x 32 x 16 at 1 x 1 x 3 mm: z (3 mm, over twice the finest) waits and gets kernel 1 at first; after one
    # in-plane halving (2, 2, 3 mm) all three are within a factor 2: 16 -> 8 -> 4 everywhere
    aniso = plan((32, 32, 16), (1.0, 1.0, 3.0))
    assert aniso.strides == [(1, 1, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2)]
    assert aniso.kernels == [(3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3)] and aniso.divisor == (8, 8, 4)
    # 40 x 40 x 18 at 1 x 1 x 3 mm: same halvings as 40 x 40 x 20 (divisor 8, 8, 4); 18 is 4.5 fours -> 20
    assert nearest_valid((40, 40, 18), (1.0, 1.0, 3.0)) == (40, 40, 20)
    opt = Unet3d.options(None)
    opt.patch_size, opt.target_spacing = '32x32x16', '1,1,3'
    net = define_generator('unet3d', 1, 1, 4, 'instance', False, 'normal', 0.02, opt)
    assert net.net.input_block.conv1.conv.weight.shape[-3:] == (3, 3, 1)
    with torch.no_grad():
        y = net(torch.randn(1, 1, 32, 32, 16))
    assert y.shape == (1, 1, 32, 32, 16) and y.abs().max() < 1


def test_a_patch_the_strides_cannot_take_is_refused_at_parse_time(tmp_path, capsys):
    root = synthrad_root(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: train.main([*BASE, '--dataroot', str(root), '--patch_size', '30x32x32',
                                    '--checkpoints_dir', str(tmp_path / 'ck')]))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert 'the nearest valid size is 32x32x32' in err and 'multiple of 8x8x8' in err
    assert not (root / '.cache').exists()                       # refused before any volume was read


def test_target_spacing_trains_on_its_grid_and_scores_on_the_native_one(tmp_path):
    shape = (30, 20, 18)
    mask = np.ones(shape, np.uint8)
    root = subject_root(tmp_path, {'ct': ramp(shape), 'mr': ramp(shape), 'mask': mask})
    ds = patch_dataset(root, '--patch_size', '8', '--target_spacing', '2')
    assert ds.arrays('s')['ct'].shape == (15, 10, 9)             # 1 mm voxels at 2 mm
    native = ds.native_arrays('s')                               # what test.py scores against
    assert native['mask'].shape == shape
    np.testing.assert_allclose(hu(torch.from_numpy(np.asarray(native['ct'], np.float64))), ramp(shape), atol=0.05)


class Crash(Exception):
    pass


def test_resume_is_bit_identical_and_every_3d_flag_is_stored(tmp_path, monkeypatch):
    """2 subjects x 2 patches, batch 2: 2 batches per epoch, 2 epochs, a save after every batch. One run goes
    through; another crashes before its 4th batch and resumes from the save after the 3rd (mid-epoch 2)."""
    root = synthrad_root(tmp_path)
    flags = {'patch_size': '16', 'target_spacing': '1,1,2', 'foreground_share': 0.5, 'patches_per_subject': 2,
             'unet3d_max_pool': 4, 'unet3d_residual': True, 'lambda_GAN': 0.5, 'body_margin_voxels': 2}
    args = [*BASE, '--dataroot', str(root), '--n_layers_D', '1', '--netD', 'n_layers', '--ndf', '4',
            '--n_epochs', '2', '--n_epochs_decay', '0', '--save_latest_freq', '2', '--display_id', '0',
            '--print_freq', '100', '--display_freq', '2', '--update_html_freq', '2', '--seed', '3',
            '--checkpoints_dir', str(tmp_path / 'ck')]
    for k, v in flags.items():
        args += [f'--{k}'] if v is True else [f'--{k}', str(v)]
    train.main([*args, '--name', 'ref'])
    real_iter, seen = data.DatasetDataLoader.__iter__, []

    def crash_at_fourth_batch(self):
        for batch in real_iter(self):
            seen.append(1)
            if len(seen) == 4:
                raise Crash
            yield batch
    monkeypatch.setattr(data.DatasetDataLoader, '__iter__', crash_at_fourth_batch)
    with pytest.raises(Crash):
        train.main([*args, '--name', 'cut'])
    monkeypatch.undo()
    train.main([*args, '--name', 'cut', '--continue_train'])
    ref, cut = tmp_path / 'ck' / 'ref', tmp_path / 'ck' / 'cut'
    for label in ('latest_net_G', 'latest_net_D', '2_net_G'):
        assert_same(safe_load(str(ref / f'{label}.pth'))['state_dict'],
                    safe_load(str(cut / f'{label}.pth'))['state_dict'], label)
    a, b = (safe_load(str(d / 'latest_state.pth')) for d in (ref, cut))
    for key in ('optimizers', 'rng'):
        assert_same(a[key], b[key], key)
    assert_same(timeless(a['counters']), timeless(b['counters']), 'counters')
    assert a['counters']['total_iters'] == 8
    # loss_log.jsonl: the first step's FLOPs once (not again on resume: the same step as a fresh model's first one
    # on the first batch), an end record per finished session (the crashed one has none) with the loop's seconds
    logs = {d.name: read_training_log(str(d / LOG_NAME)) for d in (ref, cut)}
    flops = {k: [r['step_flops'] for r in v if r['kind'] == 'flops'] for k, v in logs.items()}
    opt = TrainOptions().parse([*args, '--name', 'fresh'], setup_device=False)
    assert flops['ref'] == flops['cut'] == [training_step_flops(opt)] and flops['ref'][0] > 1e6
    ends = {k: [r for r in v if r['kind'] == 'end'] for k, v in logs.items()}
    assert [(e['total_iters'], e['train_seconds']) for e in ends['cut']] == [(8, b['counters']['train_seconds'])]
    assert len(ends['ref']) == 1 and ends['ref'][0]['peak_rss_mib'] > 100 and ends['ref'][0]['peak_gpu_mib'] is None
    # the checkpoint keeps every 3D flag as given, and rebuilds the same network from them alone
    state, _, stored = read_network_file(str(cut / 'latest_net_G.pth'))
    assert {k: stored[k] for k in flags} == flags
    assert stored['netG'] == 'unet3d' and stored['dataset_mode'] == 'patch3d' and stored['model'] == 'unet3d'
    rebuilt = define_generator('unet3d', 1, 1, stored['ngf'], stored['norm'], False, 'normal', 0.02,
                               Unet3d.options(argparse.Namespace(**stored)))
    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.divisor == (4, 4, 2)          # 16^3 at 1 x 1 x 2 mm: z waits one stage, then stops at 8
    # the HTML page shows the patches' middle axial slices
    for label in ('real_A', 'fake_B', 'real_B'):
        with Image.open(ref / 'web' / 'images' / f'epoch002_{label}.png') as picture:
            assert picture.size == (16, 16)


def test_validation_scores_whole_val_volumes_as_test_py_does(tmp_path):
    """--val_freq 1 for two epochs: each epoch's val subject is translated whole by sliding windows; the best
    epoch's score is what test.py --phase val --epoch best then measures on the same subject."""
    import test as test_script
    root = tmp_path / 'data'
    write_subject(root, 'ras')
    write_subject(root, 'other', volumes=phantom((26, 20, 18), seed=5), spacing=(1.0, 1.0, 2.5), axcodes='LPS')
    write_splits(str(root), {'train': ['ras'], 'val': ['other']})
    common = [*BASE, '--dataroot', str(root), '--checkpoints_dir', str(tmp_path / 'ck'), '--name', 'v',
              '--patch_size', '16']       # the 26 x 20 x 18 val volume: 3 x 2 x 2 windows
    train.main([*common, '--n_epochs', '2', '--n_epochs_decay', '0', '--val_freq', '1', '--patches_per_subject', '2',
                '--display_id', '0', '--print_freq', '100', '--lr', '0.01', '--seed', '1'])
    record = json.loads((tmp_path / 'ck' / 'v' / 'validation.json').read_text())
    assert record['metric'] == 'mae' and [h['epoch'] for h in record['history']] == [1, 2]
    scores = [h['score'] for h in record['history']]
    assert scores[0] != scores[1] and record['best'] == min(scores)
    page = test_script.main([*common, '--phase', 'val', '--epoch', 'best', '--results_dir', str(tmp_path / 'res')])
    with open(Path(page).parent / 'metrics.csv') as f:
        fused = [r for r in csv.DictReader(f) if r['level'] == 'volume' and r['plane'] == 'fused']
    assert [r['subject'] for r in fused] == ['other']
    assert float(fused[0]['mae']) == pytest.approx(record['best'], rel=1e-5)
    # a fused metric the --metrics set does not score is refused by name; its multi-scale SSIM can pick
    opt = TrainOptions().parse([*common, '--val_freq', '1', '--metrics', 'synthrad2025', '--val_metric', 'ms_ssim'])
    assert Validator(opt).metric == 'ms_ssim'
    opt.val_metric = 'ssim'
    with pytest.raises(ValueError, match=r'--val_metric ssim: --metrics synthrad2025 scores mae, psnr, ms_ssim of '
                                         r'the fused volume, not ssim'):
        Validator(opt)
