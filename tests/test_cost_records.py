"""What a run records of its cost and how a comparison reports it: FLOPs counted (by hand for a matrix product),
the process's peak memory (a known allocation), loss_log.jsonl's flops and end records, test.py's cost.json, the
comparison's cost columns and the absolute equal-time table."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluation.comparison import ingredients
from evaluation.comparison.plan import Run
from evaluation.comparison.results import Result, peak_memory_text, table_sections
from evaluation.test_cost import COST_FILE, read_test_cost
from scripts import compare, ingredients_table
from util.flop_count import count_flops
from util.training_log import logged_step_flops, training_summary

ROOT = Path(__file__).resolve().parents[1]


def write_log(path: Path, *records: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return path


def end(seconds: float, iters: int, rss: float | None, gpu: float | None = None) -> dict:
    return {'kind': 'end', 'train_seconds': seconds, 'total_iters': iters, 'peak_rss_mib': rss, 'peak_gpu_mib': gpu}


def test_a_matrix_product_and_its_backward_count_by_hand():
    """(8 x 5) @ (5 x 3): 2 x 8 x 5 x 3 = 240 FLOPs forward; the backward's two products (gradients of both
    operands) 480 more."""
    a = torch.randn(8, 5, requires_grad=True)
    b = torch.randn(5, 3, requires_grad=True)
    assert count_flops(lambda: a @ b) == 240
    assert count_flops(lambda: (a @ b).sum().backward()) == 240 + 480
    assert a.grad is not None and a.grad.shape == (8, 5)        # the step ran as it would have


def test_peak_memory_grows_by_an_allocation_it_touched():
    """A fresh process allocates and touches 400 MB (50 M float64, 381.5 MiB): its recorded peak is then at least
    its resident set before (Linux's VmRSS) plus that, and at most the larger of its earlier peak and that sum."""
    code = ('import numpy as np\nfrom util.peak_memory import peak_memory\n'
            'now = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS")][0]\n'
            'before = peak_memory()["peak_rss_mib"]\nx = np.ones(50_000_000)\n'
            'after = peak_memory()\nprint(now, before, after["peak_rss_mib"], after["peak_gpu_mib"])')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    now, before, after, gpu = out.split()
    assert float(now) + 381 < float(after) < max(float(before), float(now) + 381.5) + 20 and gpu == 'None'


def test_the_training_log_gives_the_first_steps_flops_and_the_sessions_peaks(tmp_path: Path):
    """Two sessions of one run (resumed at 30 s, ended at 61 s of training) and a killed one without an end."""
    log = write_log(tmp_path / 'x_fold0' / 'loss_log.jsonl', {'kind': 'start', 'date': 'x'},
                    {'kind': 'flops', 'step_flops': 2.5e9}, end(30.0, 20, 700.0),
                    {'kind': 'start', 'date': 'y'}, end(61.0, 41, 650.5), {'kind': 'start', 'date': 'z'})
    assert logged_step_flops(str(log)) == 2.5e9
    assert training_summary(str(log)) == {'train_seconds': 61.0, 'peak_rss_mib': 700.0,
                                          'peak_gpu_mib': pytest.approx(math.nan, nan_ok=True)}
    killed = write_log(tmp_path / 'x_fold1' / 'loss_log.jsonl', {'kind': 'start', 'date': 'x'})
    assert math.isnan(logged_step_flops(str(killed)))
    assert all(math.isnan(v) for v in training_summary(str(killed)).values())
    assert math.isnan(logged_step_flops(str(tmp_path / 'none.jsonl')))
    # a comparison row's training peak: the largest over its members (folds), a member without records ignored
    write_log(tmp_path / 'x_fold2' / 'loss_log.jsonl', end(10.0, 5, 900.0, 2048.0))
    peaks = compare.training_memory(Run('e', 'E', 'mrnet', [], 'x', folds=3), str(tmp_path))
    assert peaks == {'train_peak_rss_mib': 900.0, 'train_peak_gpu_mib': 2048.0}


def test_test_costs_per_volume_and_without_a_record(tmp_path: Path):
    (tmp_path / COST_FILE).write_text(json.dumps({'predict_seconds': 9.0, 'items': 432, 'volumes': 3,
                                                  'peak_rss_mib': 1500.0, 'peak_gpu_mib': None}))
    cost = read_test_cost(str(tmp_path))
    assert (cost['seconds_per_volume'], cost['items'], cost['peak_rss_mib']) == (3.0, 432, 1500.0)
    assert math.isnan(cost['peak_gpu_mib'])
    (tmp_path / COST_FILE).write_text(json.dumps({'predict_seconds': 9.0, 'items': 4, 'volumes': 0}))
    assert math.isnan(read_test_cost(str(tmp_path))['seconds_per_volume'])     # 2D images: no volume
    assert all(math.isnan(v) for v in read_test_cost(str(tmp_path / 'old')).values())


def test_the_cost_table_shows_time_per_volume_and_peak_memory():
    peaks = {'train_peak_rss_mib': 812.4, 'test_peak_rss_mib': 1503.6}
    rows = [Result('cpu', 'unet3d', volume_seconds=2.5, peaks=peaks),
            Result('gpu', 'mrnet', volume_seconds=150.0, peaks={**peaks, 'train_peak_gpu_mib': 4096.0}),
            Result('old', 'mrnet')]
    cost = table_sections(rows)[-1]
    assert cost.header[-2:] == ['prediction / volume', 'peak memory train / test']
    assert [(r[-2].text, r[-1].text) for r in cost.rows] == [('2.5 s', '812 / 1504 MiB'),
                                                             ('2.5 min', '812 / 1504 MiB + GPU 4096 / - MiB'),
                                                             ('-', '-')]
    assert peak_memory_text({'test_peak_rss_mib': 99.5}) == '- / 100 MiB'


def test_the_absolute_table_gives_each_rows_cost_in_its_own_units(tmp_path: Path, monkeypatch):
    """Two members trained 61 s and 20 s of loop time; the row's record holds its images, FLOPs, time per volume
    and peaks, as compare.py writes them."""
    folder = tmp_path / 'results' / 'compare_t'
    run = {'key': 'unet3d', 'label': '3D U-Net', 'loss_log': '../../checkpoints/m0/loss_log.txt', 'test_dir': 't'}
    record = {'members': ['m0', 'm1'], 'train_images': 57, 'train_flops': 1.5e11, 'volume_seconds': 2.54,
              'train_peak_rss_mib': 700.2, 'test_peak_rss_mib': 1203.7}
    write_log(tmp_path / 'checkpoints' / 'm0' / 'loss_log.jsonl', end(61.0, 40, 700.2))
    write_log(tmp_path / 'checkpoints' / 'm1' / 'loss_log.jsonl', end(20.0, 17, 650.0))
    cost = ingredients.absolute_cost(ingredients.member_logs(str(folder), run, record), record)
    assert cost == {'images': 57, 'tflops': 0.15, 'loop_seconds': 81.0, 'volume_seconds': 2.54,
                    'train_peak_mib': 700.2, 'test_peak_mib': 1203.7}
    scores = {'mae': 80.04, 'psnr': 27.123, 'ssim': 0.91234, 'ms_ssim': 0.95}
    monkeypatch.setattr(ingredients_table, 'budget_rows',
                        lambda f: ([{'label': run['label'], 'scores': scores, 'cost': cost},
                                    {'label': 'MRNet', 'scores': None, 'cost': dict.fromkeys(cost, math.nan)}], {}))
    table = ingredients_table.absolute_markdown('demo', {'1 min': str(folder)})
    assert '| 1 min | 3D U-Net | 80.0 | 27.12 | 0.9123 | 0.9500 | 57 | 0.150 | 81 | 2.5 | 700 | 1204 |' in table
    assert '| 1 min | MRNet | not measured | | | | - | - | - | - | - | - |' in table
