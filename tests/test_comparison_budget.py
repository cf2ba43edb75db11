"""Rows of different kinds at equal training time: the 3D row's own settings in compare.py, --time_budget_min
(options/training_budget.py) and the training FLOPs of the comparison table."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from evaluation.comparison.plan import group_flags
from evaluation.comparison.results import Result, table_sections
from options import comparison_options
from options.training_budget import TrainingBudget, budget_spent
from scripts import compare
from volume_fixtures import write_subject
from data.splits import write_splits


def test_the_budget_counts_running_time_of_all_sessions():
    budget = TrainingBudget(1.0, earlier=59.9)              # 59.9 s of one minute spent in earlier sessions
    assert not budget.spent() and budget.seconds() == pytest.approx(59.9)   # the clock is paused
    budget.run()
    time.sleep(0.15)
    assert budget.spent() and budget.stopped
    budget.pause()
    assert budget.counters(3, 7, 40) == {'epoch': 3, 'epoch_iter': 7, 'total_iters': 40,
                                         'train_seconds': budget.seconds(), 'budget_spent': True}
    unlimited = TrainingBudget(0.0, earlier=1e9)
    unlimited.run()
    assert not unlimited.spent()
    with pytest.raises(ValueError, match='--time_budget_min -1'):
        TrainingBudget(-1.0)


def test_a_run_stopped_by_its_budget_is_done_for_that_budget_only(tmp_path: Path):
    torch.save({'counters': {'epoch': 2, 'total_iters': 9, 'train_seconds': 130.0, 'budget_spent': True}},
               tmp_path / 'latest_state.pth')
    assert budget_spent(str(tmp_path), 2.0)                 # 130 s >= 2 min: reused
    assert not budget_spent(str(tmp_path), 3.0)             # a larger budget resumes it
    assert not budget_spent(str(tmp_path), 0.0)             # no budget: the epochs decide
    assert not budget_spent(str(tmp_path / 'none'), 2.0)


def test_the_3d_row_keeps_its_own_data_settings(tmp_path: Path):
    """--models mrnet,unet3d: the slice-only shared flags and the paper's batch/beta1 defaults stay with the slice
    row; flags given on the command line (batch size, the budget) reach both; the budget is training's only."""
    data = tmp_path / 'data'
    for name in ('a', 'b'):
        write_subject(data, name)
    write_splits(str(data), {'train': ['a'], 'test': ['b']})
    argv = ['--dataroot', str(data), '--name', 't3', '--models', 'mrnet,unet3d', '--batch_size', '1',
            '--time_budget_min', '2', '--max_dataset_size', '40', '--model_args', 'unet3d=--patch_size 16']
    runs, _ = comparison_options.plan(*compare.build_parser().parse_known_args(argv))
    mrnet, unet3d = (group_flags(r.train_args[r.train_args.index('--checkpoints_dir') + 2:]) for r in runs)
    assert (mrnet['--dataset_mode'], mrnet['--crop_size'], mrnet['--beta1']) == (['triplanar_aligned'], ['256'],
                                                                                ['0.5'])
    assert not {'--dataset_mode', '--crop_size', '--input_nc', '--beta1', '--max_dataset_size'} & set(unet3d)
    assert unet3d['--batch_size'] == ['1'] and unet3d['--time_budget_min'] == ['2']
    assert unet3d['--patch_size'] == ['16'] and runs[1].model == 'unet3d'
    assert '--time_budget_min' not in runs[1].test_args
    rows = comparison_options.ablation_runs('synthrad2025=mrnet,unet3d', 'mrnet', [], [])
    assert [(r.key, r.model) for r in rows] == [('mrnet', 'mrnet'), ('unet3d', 'unet3d')]


def test_the_cost_table_reports_training_flops():
    cost = table_sections([Result('3d', 'unet3d', train_seconds=60.0, train_flops=2.5e12),
                           Result('old', 'mrnet')])[-1]
    assert cost.header[:5] == ['model', 'parameters', 'training time', 'training FLOPs', 'inference / slice']
    assert [row[3].text for row in cost.rows] == ['2.5 T', '-']
    assert math.isnan(Result('x', 'y').train_flops)


def test_an_ablation_keeps_only_the_rows_it_names():
    keys = [r.key for r in comparison_options.ablation_runs('synthrad2025=recipe, mrnet', 'mrnet', [], [])]
    assert keys == ['mrnet', 'recipe']                        # the ablation's own order, the rest left out
    assert len(comparison_options.ablation_runs('synthrad2025', 'mrnet', [], [])) == 9
    with pytest.raises(ValueError, match=r'--ablation "synthrad2025=mrnet,dose": dose is not a row of synthrad2025'):
        comparison_options.ablation_runs('synthrad2025=mrnet,dose', 'mrnet', [], [])
