"""Resume that loses nothing, atomic checkpoints, and reproducible runs from --seed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import ROOT, run_script
from util.checkpoint import atomic_save, read_network_file, safe_load

TRAIN = str(ROOT / 'train.py')
SMALL = ['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '8', '--ndf', '8', '--load_size', '128',
         '--crop_size', '128', '--gpu_ids', '-1', '--num_threads', '0', '--display_id', '0', '--print_freq', '1']


def _losses(log: Path) -> list[str]:
    return [line.split(')', 1)[1] for line in log.read_text().splitlines() if line.startswith('(epoch')]


def test_same_seed_gives_identical_losses(aligned_root: Path, tmp_path: Path):
    args = SMALL + ['--dataroot', str(aligned_root), '--n_epochs', '3', '--n_epochs_decay', '0']
    run_script(TRAIN, *args, '--name', 'a', cwd=tmp_path)
    run_script(TRAIN, *args, '--name', 'b', cwd=tmp_path)
    run_script(TRAIN, *args, '--name', 'c', '--seed', '7', cwd=tmp_path)
    ckpt = tmp_path / 'checkpoints'
    a, b, c = (_losses(ckpt / n / 'loss_log.txt') for n in 'abc')
    assert len(a) == 3 and a == b
    assert a != c


def test_resume_continues_exactly(aligned_root: Path, tmp_path: Path):
    """Training 2 epochs in one go equals training 1 epoch, stopping, and resuming for the second."""
    common = SMALL + ['--dataroot', str(aligned_root), '--lr_policy', 'step', '--lr_decay_iters', '100',
                      '--n_epochs_decay', '0']
    run_script(TRAIN, *common, '--name', 'straight', '--n_epochs', '2', cwd=tmp_path)
    run_script(TRAIN, *common, '--name', 'resumed', '--n_epochs', '1', cwd=tmp_path)
    proc = run_script(TRAIN, *common, '--name', 'resumed', '--n_epochs', '2', '--continue_train', cwd=tmp_path)
    assert 'resuming at epoch 2' in proc.stdout and 'End of epoch 1 ' not in proc.stdout
    ckpt = tmp_path / 'checkpoints'
    for net in ('G', 'D'):
        a, _, _ = read_network_file(str(ckpt / 'straight' / f'latest_net_{net}.pth'))
        b, _, _ = read_network_file(str(ckpt / 'resumed' / f'latest_net_{net}.pth'))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f'{net}.{k} differs after resume'
    state = safe_load(str(ckpt / 'resumed' / 'latest_state.pth'))
    assert state['counters']['epoch'] == 3 and len(state['optimizers']) == 2
    assert _losses(ckpt / 'straight' / 'loss_log.txt') == _losses(ckpt / 'resumed' / 'loss_log.txt')


def test_sigkill_then_resume(aligned_root: Path, tmp_path: Path):
    """A real training process killed with SIGKILL resumes from its last checkpoint and goes on counting."""
    args = SMALL + ['--dataroot', str(aligned_root), '--name', 'killed', '--n_epochs', '400', '--n_epochs_decay', '0',
                    '--save_latest_freq', '1']
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='2')
    proc = subprocess.Popen([sys.executable, TRAIN, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / 'checkpoints' / 'killed' / 'latest_state.pth'
    deadline = time.time() + 120
    epoch = 0
    try:
        while time.time() < deadline:
            if state_file.exists():
                epoch = safe_load(str(state_file))['counters']['epoch']
                if epoch >= 3:
                    break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert epoch >= 3, 'training did not reach epoch 3 in time'
    # no temporary files are left behind as checkpoints, and every checkpoint loads
    for f in (tmp_path / 'checkpoints' / 'killed').glob('*.pth'):
        safe_load(str(f))
    stopped_at = safe_load(str(state_file))['counters']['epoch']
    resumed = run_script(TRAIN, *[a if a != '400' else str(stopped_at + 1) for a in args], '--continue_train',
                         cwd=tmp_path)
    assert f'resuming at epoch {stopped_at}' in resumed.stdout
    assert 'latest_net_G.pth' in resumed.stdout
    assert f'End of epoch {stopped_at + 1} / {stopped_at + 1}' in resumed.stdout
    assert 'End of epoch 1 /' not in resumed.stdout


def test_atomic_save_leaves_old_file_on_failure(tmp_path: Path):
    path = tmp_path / 'x.pth'
    atomic_save({'a': torch.ones(2)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('boom')
    try:
        atomic_save({'a': Unpicklable()}, str(path))
    except RuntimeError:
        pass
    assert torch.equal(safe_load(str(path))['a'], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ['x.pth']


def test_save_by_iter_load_iter_and_epoch(aligned_root: Path, tmp_path: Path):
    """--save_by_iter keeps iter_<n> checkpoints; test.py picks them with --load_iter, or an epoch with --epoch."""
    args = SMALL + ['--dataroot', str(aligned_root), '--name', 'byiter']
    run_script(TRAIN, *args, '--n_epochs', '2', '--n_epochs_decay', '0', '--save_by_iter', '--save_latest_freq', '1',
               '--save_epoch_freq', '1', cwd=tmp_path)
    ckpt = tmp_path / 'checkpoints' / 'byiter'
    for name in ('iter_1_net_G.pth', 'iter_2_net_G.pth', 'iter_2_state.pth', '1_net_G.pth', '2_net_G.pth',
                 'latest_net_G.pth'):
        assert (ckpt / name).exists(), name
    test = SMALL[:-4] + ['--dataroot', str(aligned_root), '--name', 'byiter']  # without the display/print flags
    proc = run_script(str(ROOT / 'test.py'), *test, '--load_iter', '1', cwd=tmp_path)
    assert 'iter_1_net_G.pth' in proc.stdout
    assert (tmp_path / 'results' / 'byiter' / 'test_latest_iter1' / 'index.html').exists()
    proc = run_script(str(ROOT / 'test.py'), *test, '--epoch', '2', cwd=tmp_path)
    assert '2_net_G.pth' in proc.stdout and (tmp_path / 'results' / 'byiter' / 'test_2' / 'index.html').exists()
