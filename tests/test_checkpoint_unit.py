"""A checkpoint is one unit: resume after SIGKILL at any moment is bit-identical to an uninterrupted run (weights,
optimisers, schedulers, image pools, RNG), torn saves are detected, temporary files are cleaned up, files get the
umask's permissions, and epoch files exist once the epoch is marked done."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, _pattern
from util.checkpoint import atomic_save, journal_path, recover, safe_load, save_together

WORKER = str(ROOT / 'tests' / 'kill_worker.py')
NETS = ('G_A', 'G_B', 'D_A', 'D_B')
# CycleGAN with an image pool, linearly decaying lr, 4 batches per epoch, 3 epochs, a checkpoint every 3 images:
# latest_state.pth is replaced at images 3, 4 (end of epoch 1), 6, 8 (end of epoch 2), 9, 12, 12 (end of epoch 3)
CYCLE = ['--model', 'cycle_gan', '--dataset_mode', 'unaligned', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf',
         '4', '--n_layers_D', '1', '--netD', 'n_layers', '--load_size', '36', '--crop_size', '32', '--pool_size', '3',
         '--batch_size', '1', '--lr_policy', 'linear', '--n_epochs', '1', '--n_epochs_decay', '2',
         '--save_latest_freq', '3', '--save_epoch_freq', '1', '--gpu_ids', '-1', '--num_threads', '0',
         '--display_id', '0', '--no_html', '--print_freq', '100', '--seed', '5']


@pytest.fixture(scope='module')
def cycle_data(tmp_path_factory) -> Path:
    """DIR/trainA, DIR/trainB with four different 40x40 images each."""
    root = tmp_path_factory.mktemp('cycle')
    rng = np.random.default_rng(3)
    for sub in ('trainA', 'trainB'):
        (root / sub).mkdir()
        for i in range(4):
            Image.fromarray(_pattern(rng, 40).astype(np.uint8)).save(root / sub / f'{i}.png')
    return root


def _run(cwd: Path, name: str, *args: str, event: str = 'none', target: str = '-', count: int = 0,
         killed: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, WORKER, event, target, str(count), *CYCLE, '--name', name, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if killed:
        assert proc.returncode == -9, \
            f'not killed at {event} {target} #{count}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}'
    else:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def reference(cycle_data: Path, tmp_path_factory) -> Path:
    """The run folder of an uninterrupted training."""
    cwd = tmp_path_factory.mktemp('reference')
    _run(cwd, 'ref', '--dataroot', str(cycle_data))
    return cwd / 'checkpoints' / 'ref'


def assert_same(a, b, where: str = '') -> None:
    """Bit-identical nested checkpoint content (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f'{where} differs'
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f'{where}: keys {sorted(a)} vs {sorted(b)}'
        for k in a:
            assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{where}: length {len(a)} vs {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} vs {b!r}'


def timeless(counters: dict) -> dict:
    """The training counters but ``train_seconds``, the loop's wall clock (--time_budget_min), which no two runs
    share."""
    return {k: v for k, v in counters.items() if k != 'train_seconds'}


def assert_same_run(ref: Path, run: Path) -> None:
    """Every network file and the full training state of ``run`` equal those of ``ref``."""
    for label in ('latest', '1', '2', '3'):
        for net in NETS:
            a, b = (safe_load(str(d / f'{label}_net_{net}.pth')) for d in (ref, run))
            assert_same(a['state_dict'], b['state_dict'], f'{label}_net_{net}')
    a, b = (safe_load(str(d / 'latest_state.pth')) for d in (ref, run))
    assert a['checkpoint']['total_iters'] == 12
    assert_same(timeless(a['counters']), timeless(b['counters']), 'counters')
    for key in ('optimizers', 'schedulers', 'pools', 'rng'):
        assert_same(a[key], b[key], key)
    assert len(b['pools']['fake_A_pool']['images']) == 3          # the pool was full and kept its images
    lr = [g['lr'] for o in b['optimizers'] for g in o['param_groups']]
    assert lr == [a_g['lr'] for o in a['optimizers'] for a_g in o['param_groups']] and lr[0] < 2e-4
    # nothing left behind but whole files, with the permissions umask 027 gives
    leftovers = [p.name for p in run.iterdir() if p.name.endswith('.tmp') or p.name.endswith('.commit.json')]
    assert leftovers == []
    for f in run.glob('*.pth'):
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f.name


# (event, file, occurrence, what the resumed run says): the moments of the issue
MOMENTS = [
    ('batch', '-', 8, None),                                  # mid-epoch 2, between the saves at images 6 and 9
    # right after the mid-epoch save at image 6 put its last file in place (its journal not yet removed)
    ('replace', 'latest_state.pth', 3, 'completed a save that was interrupted'),
    ('replace', 'latest_net_G_A.pth', 3, 'completed a save that was interrupted'),   # inside that save
    ('write', 'latest_state.pth', 3, 'an interrupted save was discarded'),            # its state half written
    ('replace', 'latest_state.pth', 2, 'completed a save that was interrupted'),      # the state ending epoch 1
]


@pytest.mark.parametrize('event,target,count,message', MOMENTS, ids=[f'{m[0]}-{m[1]}-{m[2]}' for m in MOMENTS])
def test_sigkill_at_any_moment_resumes_bit_identical(cycle_data, reference, tmp_path, event, target, count, message):
    root = ['--dataroot', str(cycle_data)]
    _run(tmp_path, 'k', *root, event=event, target=target, count=count, killed=True)
    run = tmp_path / 'checkpoints' / 'k'
    if (event, count) == ('replace', 2):
        # the end-of-epoch state is the last file of epoch 1: its epoch files are there already
        assert all((run / f'1_net_{n}.pth').exists() for n in NETS)
        assert safe_load(str(run / 'latest_state.pth'))['counters']['epoch'] == 2
    if event == 'write':
        assert any(p.name.startswith('.latest_state.pth.') for p in run.iterdir())   # the 0-byte temporary file
    proc = _run(tmp_path, 'k', *root, '--continue_train')
    out = proc.stdout
    assert 'taking over a stale lock' in out
    if message:
        assert out.count(message) == 1, out
    else:
        assert 'interrupted' not in out
    if (event, target) == ('batch', '-'):
        assert 'resuming at epoch 2, image 2 of that epoch, 6 images seen' in out      # resumed mid-epoch
    assert_same_run(reference, run)


def test_torn_checkpoint_is_refused_with_the_files_named(cycle_data, reference, tmp_path):
    """Files of different saves put together (copied by hand) are never silently mixed."""
    run = tmp_path / 'checkpoints' / 'torn'
    run.mkdir(parents=True)
    for f in reference.glob('latest_*'):
        (run / f.name).write_bytes(f.read_bytes())
    (run / 'latest_net_D_B.pth').write_bytes((reference / '1_net_D_B.pth').read_bytes())
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, str(ROOT / 'train.py'), *CYCLE, '--name', 'torn', '--dataroot',
                           str(cycle_data), '--continue_train'], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    assert 'checkpoint "latest" is torn' in proc.stderr and 'latest_net_D_B.pth: save' in proc.stderr
    assert 'latest_net_G_A.pth: epoch 4, 12 images seen' in proc.stderr


def test_save_together_rolls_forward_or_back(tmp_path: Path):
    """The journal decides: with it every new file is put in place, without it every old file stays."""
    a, b = str(tmp_path / 'a.pth'), str(tmp_path / 'b.pth')
    save_together({a: {'v': torch.zeros(1)}, b: {'v': torch.zeros(1)}}, journal_path(str(tmp_path), 'x'))
    # killed after the journal, once a.pth was replaced: recover() completes the save
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if dst == a:
            raise KeyboardInterrupt   # stands for SIGKILL: nothing after this runs
    os.replace = replace_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            save_together({a: {'v': torch.ones(1)}, b: {'v': torch.ones(1)}}, journal_path(str(tmp_path), 'x'))
    finally:
        os.replace = real_replace
    assert float(safe_load(b)['v']) == 0 and os.path.exists(journal_path(str(tmp_path), 'x'))
    lines = recover(str(tmp_path))
    assert len(lines) == 1 and 'completed a save' in lines[0]
    assert float(safe_load(a)['v']) == float(safe_load(b)['v']) == 1
    # killed before the journal: the temporary files are garbage and the old pair stays
    (tmp_path / '.b.pth.abc.tmp').write_bytes(b'')
    lines = recover(str(tmp_path))
    assert len(lines) == 1 and 'discarded (unfinished b.pth' in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.pth', 'b.pth']
    # a failure while writing (not a kill) cleans up itself and changes nothing
    with pytest.raises(RuntimeError, match='boom'):
        save_together({a: {'v': torch.full((1,), 2.0)}, b: {'v': _Unpicklable()}}, journal_path(str(tmp_path), 'x'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.pth', 'b.pth'] and float(safe_load(a)['v']) == 1


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError('boom')


def test_atomic_save_keeps_the_old_file_and_follows_the_umask(tmp_path: Path):
    path = tmp_path / 'x.pth'
    old = os.umask(0o002)
    try:
        atomic_save({'a': torch.ones(2)}, str(path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
        with pytest.raises(RuntimeError, match='boom'):
            atomic_save({'a': _Unpicklable()}, str(path))
    finally:
        os.umask(old)
    assert torch.equal(safe_load(str(path))['a'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ['x.pth']


def test_counters_round_trip_whatever_they_hold(tmp_path: Path):
    """The loop may keep more than epoch/iteration in its counters (validation: best score, patience)."""
    from options.train_options import TrainOptions
    from models import create_model
    opt = TrainOptions().parse(['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '4', '--ndf', '4', '--gpu_ids',
                                '-1', '--checkpoints_dir', str(tmp_path), '--name', 'c', '--display_id', '0'])
    model = create_model(opt)
    model.setup(opt)
    counters = {'epoch': 3, 'epoch_iter': 2, 'total_iters': 10, 'best': {'score': 0.8125, 'epoch': 2},
                'patience': 1, 'history': [0.5, 0.8125]}
    model.save_training_state('latest', counters)
    counters['best']['score'] = 0.0   # the saved copy is not the caller's object
    loaded = create_model(opt)
    loaded.setup(opt)
    assert loaded.load_training_state('latest') == {'epoch': 3, 'epoch_iter': 2, 'total_iters': 10, 'patience': 1,
                                                    'best': {'score': 0.8125, 'epoch': 2}, 'history': [0.5, 0.8125]}
    stamps = {safe_load(str(tmp_path / 'c' / f))['checkpoint']['id'] for f in
              ('latest_net_G.pth', 'latest_net_D.pth', 'latest_state.pth')}
    assert len(stamps) == 1


def test_test_phase_reads_again_a_checkpoint_caught_mid_commit(tmp_path: Path, monkeypatch):
    """A training run's save of `latest` is caught half-way through its renames (its journal written, G_A already the
    new file, G_B still the old one): test.py's model reads a torn checkpoint, waits, reads again once the writer
    has finished, and loads the new weights of both networks."""
    from models import base_model, create_model
    from options.test_options import TestOptions
    from options.train_options import TrainOptions
    from util import checkpoint
    common = ['--model', 'cycle_gan', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4', '--name', 'mid',
              '--checkpoints_dir', str(tmp_path), '--gpu_ids', '-1', '--dataroot', str(tmp_path)]
    opt = TrainOptions().parse(common + ['--display_id', '0'], setup_device=False)
    opt.device = torch.device('cpu')
    trainer = create_model(opt)
    trainer.save_networks('latest')                                           # save A, complete
    with torch.no_grad():
        for name in ('G_A', 'G_B'):
            for p in getattr(trainer, f'net{name}').parameters():
                p.add_(1.0)
    new = {name: {k: v.clone() for k, v in getattr(trainer, f'net{name}').state_dict().items()}
           for name in ('G_A', 'G_B')}
    real_apply, pending = checkpoint._apply_journal, []

    def rename_g_a_only(folder, journal, record):                             # the writer stops mid-way
        for tmp, final in record.items():
            if final.endswith('net_G_A.pth'):
                os.replace(os.path.join(folder, tmp), os.path.join(folder, final))
        pending.append((folder, journal, record))
    monkeypatch.setattr(checkpoint, '_apply_journal', rename_g_a_only)
    trainer.save_networks('latest')                                           # save B, caught mid-commit
    monkeypatch.setattr(checkpoint, '_apply_journal', real_apply)
    assert os.path.exists(journal_path(str(tmp_path / 'mid'), 'latest'))

    waits = []

    def writer_finishes_while_we_wait(seconds):
        waits.append(seconds)
        real_apply(*pending.pop())
    monkeypatch.setattr(base_model.time, 'sleep', writer_finishes_while_we_wait)
    topt = TestOptions().parse(common, setup_device=False)
    topt.device = torch.device('cpu')
    reader = create_model(topt)
    reader.load_networks('latest')
    assert len(waits) == 1                                                    # torn once, then read again
    for name in ('G_A', 'G_B'):
        got = getattr(reader, f'net{name}').state_dict()
        assert all(torch.equal(got[k], new[name][k]) for k in new[name]), name
