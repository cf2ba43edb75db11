"""Several processes with torchrun on the CPU (gloo): sharded data, synced weights, rank 0 writes."""
from __future__ import annotations

import json
import socket
from pathlib import Path

from conftest import ROOT, run_script


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


def test_torchrun_training_writes_once(aligned_root: Path, tmp_path: Path):
    (aligned_root / 'train' / '0.png').rename(aligned_root / 'train' / 'a.png')
    for i in range(3):  # four training pairs: two per process
        (aligned_root / 'train' / f'{i}.png').write_bytes((aligned_root / 'train' / 'a.png').read_bytes())
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
