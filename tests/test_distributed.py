"""Several processes with torchrun on the CPU (gloo): sharded data, synced weights, rank 0 writes."""
from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ROOT, _pattern, run_script
from data import create_dataset
from options.train_options import TrainOptions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path):
    return run_script('-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
                      '--master_port', str(_free_port()), *args, cwd=cwd, env_extra={'OMP_NUM_THREADS': '1'})


def test_ddp_keeps_ranks_in_sync_and_averages_losses(tmp_path: Path):
    _torchrun(str(ROOT / 'tests' / 'dist_worker.py'), str(tmp_path), cwd=tmp_path)
    r0, r1 = (json.loads((tmp_path / f'rank{i}.json').read_text()) for i in (0, 1))
    assert r0['world'] == r1['world'] == 2
    assert r0['main'] and not r1['main']
    assert r0['avg'] == r1['avg'] == {'x': 1.5, 'y': 5.0}
    # each rank saw different data, yet DDP (with synchronised batch norm) keeps the generators identical
    assert r0['checksum'] == r1['checksum']


def _distinct_pairs(folder: Path, n: int, size: int = 32) -> list[str]:
    """``n`` different A|B pairs in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        a = _pattern(rng, size)
        Image.fromarray(np.stack([np.concatenate([a, 255 - a], 1).astype(np.uint8)] * 3, -1)).save(folder / f'{i}.png')
        paths.append(str(folder / f'{i}.png'))
    return paths


def test_ranks_get_disjoint_shards_covering_the_set_reshuffled_each_epoch(tmp_path: Path):
    """The loaders of 2 processes (as torchrun starts them) over 8 different items: the shards never share an
    item, together hold every item, and the order changes every epoch; a resumed epoch skips exactly the batches
    already seen."""
    paths = _distinct_pairs(tmp_path / 'train', 8)
    opt = TrainOptions().parse(['--model', 'pix2pix', '--dataset_mode', 'aligned', '--dataroot', str(tmp_path),
                                '--checkpoints_dir', str(tmp_path / 'c'), '--gpu_ids', '-1', '--num_threads', '0',
                                '--load_size', '32', '--crop_size', '32', '--batch_size', '2', '--display_id', '0'],
                               setup_device=False)
    loaders = [create_dataset(argparse.Namespace(**{**vars(opt), 'world_size': 2, 'rank': rank})) for rank in (0, 1)]
    orders = {}
    for epoch in (1, 2, 3):
        shards = []
        for loader in loaders:
            loader.set_epoch(epoch)
            shards.append([p for batch in loader for p in batch['A_paths']])
        assert [len(s) for s in shards] == [4, 4]
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == sorted(paths)
        orders[epoch] = shards
    assert orders[1] != orders[2] and orders[2] != orders[3] and orders[1] != orders[3]
    assert {frozenset(orders[e][0]) for e in orders} != {frozenset(orders[1][0])}   # items move between ranks too
    loaders[0].set_epoch(2, skip_batches=1)
    assert [p for batch in loaders[0] for p in batch['A_paths']] == orders[2][0][2:]


def test_torchrun_training_writes_once(aligned_root: Path, tmp_path: Path):
    for f in (aligned_root / 'train').iterdir():
        f.unlink()
    _distinct_pairs(aligned_root / 'train', 4, size=256)  # four different training pairs: two per process
    proc = _torchrun(str(ROOT / 'train.py'), '--model', 'pix2pix', '--name', 'ddp', '--dataroot', str(aligned_root),
                     '--netG', 'unet_128', '--ngf', '8', '--ndf', '8', '--load_size', '128', '--crop_size', '128',
                     '--norm', 'syncbatch', '--gpu_ids', '-1', '--num_threads', '0', '--display_id', '0',
                     '--n_epochs', '2', '--n_epochs_decay', '0', '--print_freq', '2', cwd=tmp_path)
    assert proc.stdout.count('End of epoch 2 / 2') == 1
    assert proc.stdout.count('model [Pix2PixModel] was created') == 1
    ckpt = tmp_path / 'checkpoints' / 'ddp'
    assert (ckpt / 'latest_net_G.pth').exists() and (ckpt / '2_net_D.pth').exists()
    lines = [line for line in (ckpt / 'loss_log.txt').read_text().splitlines() if line.startswith('(epoch')]
    # 4 images per epoch seen by 2 processes; printed every 2 images: 2 lines per epoch, from rank 0 only
    assert len(lines) == 4
