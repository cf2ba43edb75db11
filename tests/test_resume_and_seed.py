"""Reproducible runs from --seed, and checkpoints by iteration (resume after SIGKILL: test_checkpoint_unit.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from conftest import ROOT, run_script
from util.checkpoint import read_network_file
from volume_fixtures import synthrad_root

TRAIN = str(ROOT / 'train.py')
SMALL = ['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '8', '--ndf', '8', '--load_size', '128',
         '--crop_size', '128', '--gpu_ids', '-1', '--num_threads', '0', '--display_id', '0', '--print_freq', '1']


def test_same_seed_gives_identical_checkpoints_with_workers_and_augmentation(tmp_path: Path):
    """Two data-loader workers and random augmentation: the same --seed gives bit-identical weights, another seed
    does not."""
    root = synthrad_root(tmp_path)
    args = ['--dataset_mode', 'triplanar_aligned', '--dataroot', str(root), '--planes', 'z', '--input_nc', '1',
            '--output_nc', '1', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4', '--n_layers_D', '1',
            '--crop_size', '32', '--batch_size', '2', '--num_threads', '2', '--augment', '--n_epochs', '2',
            '--n_epochs_decay', '0', '--model', 'pix2pix', '--gpu_ids', '-1', '--display_id', '0']
    for name, seed in (('a', '1'), ('b', '1'), ('c', '7')):
        run_script(TRAIN, *args, '--name', name, '--seed', seed, cwd=tmp_path)
    ckpt = tmp_path / 'checkpoints'
    for net in ('G', 'D'):
        a, b, c = (read_network_file(str(ckpt / n / f'latest_net_{net}.pth'))[0] for n in 'abc')
        assert all(torch.equal(a[k], b[k]) for k in a), f'net {net} differs between two runs of one seed'
        assert not all(torch.equal(a[k], c[k]) for k in a)


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
