"""Validation during training: scores of the val split, the best checkpoint, --epoch best, --patience, resume."""
from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import data.demo_data as demo
from conftest import ROOT, run_script
from options.train_options import TrainOptions
from util.checkpoint import read_network_file, safe_load
from evaluation.validation import Validator

TRAIN, TEST = str(ROOT / 'train.py'), str(ROOT / 'test.py')
SMALL = ['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '8', '--ndf', '8', '--load_size', '128',
         '--crop_size', '128', '--gpu_ids', '-1', '--num_threads', '0']
QUIET = ['--display_id', '0', '--print_freq', '1']


@pytest.fixture
def val_root(aligned_root: Path) -> Path:
    """aligned_root with DIR/val (the two test images)."""
    shutil.copytree(aligned_root / 'test', aligned_root / 'val')
    return aligned_root


def _history(ckpt: Path) -> dict:
    return json.loads((ckpt / 'validation.json').read_text())


def test_best_score_and_patience_bookkeeping(val_root: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt = TrainOptions().parse(SMALL + ['--dataroot', str(val_root), '--val_freq', '1', '--patience', '2'])
    v = Validator(opt)
    assert v.metric == 'slice_psnr' and v.higher                      # 2D data: slice PSNR, higher is better
    stops = []
    for epoch, psnr in enumerate([20.0, 25.0, 24.0, 25.0, 23.0], start=1):   # ties do not count as better
        best = v.update(epoch, {'n': 2, 'slice': {'psnr': psnr, 'ssim': 0.5}}, 0.1)
        stops.append((best, v.best_epoch, v.bad_epochs, v.stopped))
    assert stops == [(True, 1, 0, False), (True, 2, 0, False), (False, 2, 1, False), (False, 2, 2, True),
                     (False, 2, 3, True)]
    state = json.loads(json.dumps(v.state()))                           # plain values: survives any serialisation
    other = Validator(opt)
    other.load_state(state)
    assert (other.best, other.best_epoch, other.bad_epochs, other.stopped) == (25.0, 2, 3, True)
    opt.val_metric = 'mae'
    with pytest.raises(ValueError, match='--val_metric mae scores volumes'):
        Validator(opt)
    opt.val_metric = 'auto'
    shutil.rmtree(val_root / 'val')
    with pytest.raises(ValueError, match='needs a val split.*--val_freq 0'):
        Validator(opt)


def test_best_checkpoint_is_the_best_scored_epoch_and_test_reproduces_its_score(val_root: Path, tmp_path: Path):
    args = SMALL + QUIET + ['--dataroot', str(val_root), '--name', 'v', '--n_epochs', '3', '--n_epochs_decay', '0',
                            '--save_epoch_freq', '1', '--val_freq', '1']
    proc = run_script(TRAIN, *args, cwd=tmp_path)
    ckpt = tmp_path / 'checkpoints' / 'v'
    record = _history(ckpt)
    scores = [h['score'] for h in record['history']]
    assert [h['epoch'] for h in record['history']] == [1, 2, 3] and record['metric'] == 'slice_psnr'
    assert record['best_epoch'] == 1 + int(np.argmax(scores)) and record['best'] == max(scores)
    best, _, _ = read_network_file(str(ckpt / 'best_net_G.pth'))
    same, _, _ = read_network_file(str(ckpt / f'{record["best_epoch"]}_net_G.pth'))
    assert all(torch.equal(best[k], same[k]) for k in same)
    log = (ckpt / 'loss_log.txt').read_text()
    assert log.count('(validation epoch: ') == 3 and f'best slice_psnr {max(scores):.4g}' in log
    assert 'Validation (best by slice_psnr)' in (ckpt / 'web' / 'index.html').read_text()
    assert f'best validation slice_psnr {max(scores):.4g} at epoch {record["best_epoch"]}' in proc.stdout
    # test.py --epoch best on the val split scores exactly what validation recorded for that epoch
    proc = run_script(TEST, *SMALL, '--dataroot', str(val_root), '--name', 'v', '--epoch', 'best', '--phase', 'val',
                      '--eval', cwd=tmp_path)
    assert 'best_net_G.pth' in proc.stdout and f'best checkpoint: epoch {record["best_epoch"]}' in proc.stdout
    with open(tmp_path / 'results' / 'v' / 'val_best' / 'metrics.csv') as f:
        psnr = [float(r['psnr']) for r in csv.DictReader(f)]
    assert len(psnr) == 2 and np.mean(psnr) == pytest.approx(record['best'], abs=1e-9)


def test_resume_keeps_the_best_and_patience_stops(val_root: Path, tmp_path: Path):
    """With --lr 0 (and instance norm: no running statistics) no epoch beats the first: resumed with --patience 2,
    training stops after epoch 3 of 6."""
    args = SMALL + QUIET + ['--dataroot', str(val_root), '--name', 'p', '--n_epochs_decay', '0', '--lr', '0',
                            '--norm', 'instance',
                            '--val_freq', '1', '--save_epoch_freq', '1']
    run_script(TRAIN, *args, '--n_epochs', '1', cwd=tmp_path)
    ckpt = tmp_path / 'checkpoints' / 'p'
    first = _history(ckpt)
    assert first['best_epoch'] == 1 and safe_load(str(ckpt / 'latest_state.pth'))['counters']['validation'] == \
        {k: first[k] for k in ('metric', 'best', 'best_epoch', 'bad_epochs', 'stopped', 'history')}
    proc = run_script(TRAIN, *args, '--n_epochs', '6', '--patience', '2', '--continue_train', cwd=tmp_path)
    record = _history(ckpt)
    assert [h['epoch'] for h in record['history']] == [1, 2, 3]
    assert record['best_epoch'] == 1 and record['best'] == first['best'] and record['stopped']
    assert 'early stop' in proc.stdout and not (ckpt / '4_net_G.pth').exists()
    counters = safe_load(str(ckpt / 'latest_state.pth'))['counters']
    assert counters['epoch'] == 4 and counters['validation']['bad_epochs'] == 2
    proc = run_script(TRAIN, *args, '--n_epochs', '6', '--patience', '2', '--continue_train', cwd=tmp_path)
    assert 'End of epoch' not in proc.stdout and len(_history(ckpt)['history']) == 3   # a stopped run stays stopped


def test_mrnet_validates_ct_volumes_by_mae_by_default(tmp_path: Path):
    """MRNet validates every epoch by default; for CT volumes the fused-volume MAE (HU) picks the best."""
    with pytest.MonkeyPatch.context() as mp:                 # three 12 x 14 x 10 subjects: one per split
        mp.setattr(demo, 'SHAPE', (12, 14, 10))
        mp.setattr(demo, 'SPACING_ISO', (16.0, 16.0, 16.0))
        mp.setattr(demo, 'SPACING_ANISO', (16.0, 16.0, 20.0))
        demo.make_synthrad(str(tmp_path / 'data'), 3, 2024)
    tiny = ['--model', 'mrnet', '--dataroot', str(tmp_path / 'data'), '--name', 'm', '--ngf', '4', '--ndf', '4',
            '--planes', 'z', '--gpu_ids', '-1', '--num_threads', '0', '--sam_input_size', '64', '--sam_embed_dim',
            '32', '--sam_depth', '2', '--sam_num_heads', '2', '--sam_global_attn_indexes', '1']
    proc = run_script(TRAIN, *tiny, '--n_epochs', '1', '--max_dataset_size', '2', '--batch_size', '1',
                      '--display_id', '0', cwd=tmp_path)
    assert 'best by mae (lower is better)' in proc.stdout
    record = _history(tmp_path / 'checkpoints' / 'm')
    assert record['metric'] == 'mae' and not record['higher_is_better'] and record['best_epoch'] == 1
    scores = record['history'][0]['scores']
    assert set(scores) == {'mae', 'psnr', 'ssim', 'slice_psnr', 'slice_ssim'} and record['best'] == scores['mae'] > 0
    proc = run_script(TEST, *tiny, '--epoch', 'best', '--phase', 'val', cwd=tmp_path)
    assert f'fused: n 1, mae {record["best"]:.4g}' in proc.stdout       # test.py scores the same volume the same


def test_best_checkpoint_is_kept_when_a_later_epoch_scores_worse(val_root: Path, tmp_path: Path, monkeypatch):
    """Scores of the val split scripted as 20, 25, 22 dB (the scoring itself is tested above): best_net_G.pth is
    epoch 2's network, not the latest (epoch 3, whose weights differ: lr > 0), and validation.json says epoch 2."""
    import train as train_script
    from evaluation import validation
    scripted = iter([20.0, 25.0, 22.0])
    monkeypatch.setattr(validation.Validator, 'score',
                        lambda self, model: ({'n': 2, 'slice': {'psnr': next(scripted), 'ssim': 0.5}}, 0.1))
    monkeypatch.chdir(tmp_path)
    tiny = ['--model', 'pix2pix', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4', '--n_layers_D', '1',
            '--load_size', '32', '--crop_size', '32', '--gpu_ids', '-1', '--num_threads', '0']
    train_script.main(tiny + QUIET + ['--dataroot', str(val_root), '--name', 'b', '--n_epochs', '3', '--n_epochs_decay',
                                      '0', '--save_epoch_freq', '1', '--val_freq', '1', '--no_html'])
    ckpt = tmp_path / 'checkpoints' / 'b'
    record = _history(ckpt)
    assert (record['best_epoch'], record['best']) == (2, 25.0)
    best, _, _ = read_network_file(str(ckpt / 'best_net_G.pth'))
    second, _, _ = read_network_file(str(ckpt / '2_net_G.pth'))
    third, _, _ = read_network_file(str(ckpt / '3_net_G.pth'))
    assert all(torch.equal(best[k], second[k]) for k in second)
    assert not all(torch.equal(best[k], third[k]) for k in third)


def test_unwrapped_eval_runs_bare_networks_in_eval_mode_and_puts_everything_back(monkeypatch):
    """Validation runs the networks without their DDP wrapper, in eval mode; afterwards (also after an error) the
    wrappers are back and every module has its own training flag again (a mixed state here)."""
    from models import base_model

    class Wrapper(nn.Module):                    # stands for DistributedDataParallel (no process group needed)
        def __init__(self, module: nn.Module):
            super().__init__()
            self.module = module

    class TwoNets(base_model.BaseModel):
        def __init__(self, opt):
            super().__init__(opt)
            self.model_names = ['G', 'D']
            self.netG = Wrapper(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Dropout()))
            self.netD = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Dropout())

        def forward(self) -> None:
            pass

        def optimize_parameters(self) -> None:
            pass

    monkeypatch.setattr(base_model, 'DistributedDataParallel', Wrapper)
    model = TwoNets(argparse.Namespace(gpu_ids=[], isTrain=False, device=torch.device('cpu'), checkpoints_dir='.',
                                       name='two', amp='off'))
    model.netD[1].eval()
    wrapper, bare, plain = model.netG, model.netG.module, model.netD
    modules = [*bare.modules(), *plain.modules()]
    flags = [m.training for m in modules]
    assert flags == [True, True, True, True, True, False]
    with model.unwrapped_eval():
        assert model.netG is bare and model.netD is plain and not any(m.training for m in modules)
    assert model.netG is wrapper and model.netD is plain and [m.training for m in modules] == flags
    with pytest.raises(RuntimeError, match='inside'):
        with model.unwrapped_eval():
            raise RuntimeError('inside')
    assert model.netG is wrapper and [m.training for m in modules] == flags
