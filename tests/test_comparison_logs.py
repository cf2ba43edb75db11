"""What a comparison reads from its runs besides their metrics: the training logs for programs (loss curves, the
time per iteration without validation) and the ingredients tables' rows (training-time ratios, MS-SSIM of the fused
volume)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.comparison import figures, ingredients
from evaluation.comparison.figures import loss_curves
from evaluation.comparison.plan import Run
from evaluation.comparison.results import Result
from scripts import compare, ingredients_table
from util.training_log import iteration_seconds


def write_log(path: Path, *records: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return path


def iteration(epoch: int, iters: int, seconds: float, **losses: float | None) -> dict:
    return {'kind': 'iteration', 'epoch': epoch, 'iters': iters, 'time': seconds, 'data': 0.0, 'losses': losses}


def validation(epoch: int, seconds: float) -> dict:
    return {'kind': 'validation', 'epoch': epoch, 'seconds': seconds, 'metric': 'psnr', 'score': 20.0,
            'scores': {'psnr': 20.0}}


START = {'kind': 'start', 'date': '2025-05-01T14:03:59+00:00'}


def test_loss_curves_of_a_resumed_run(tmp_path: Path):
    """Records repeated after a resume replace the earlier ones; x runs in epochs; validations are no losses."""
    log = write_log(tmp_path / 'loss_log.jsonl', START, iteration(1, 2, 0.1, G_GAN=1.0, G_L1=50.0),
                    iteration(1, 4, 0.1, G_GAN=0.8, G_L1=40.0), START, iteration(1, 4, 0.1, G_GAN=0.7, G_L1=39.0),
                    validation(1, 12.3), iteration(2, 2, 0.1, G_GAN=0.6, G_L1=None))
    curves = loss_curves(str(log))
    assert list(curves) == ['G_GAN', 'G_L1']
    x, y = curves['G_GAN']
    assert x.tolist() == [0.5, 1.0, 1.5] and y.tolist() == [1.0, 0.7, 0.6]
    assert curves['G_L1'][1][:2].tolist() == [50.0, 39.0] and math.isnan(curves['G_L1'][1][2])   # null: a gap


def test_time_per_iteration_leaves_validation_out(tmp_path: Path, capsys):
    """Two iterations of 0.05 s and a validation of 12.3 s: 0.05 s per iteration ((0.05 + 0.05) / 2; the regex
    over loss_log.txt read (0.05 + 0.05 + 12.3) / 3 = 4.13 s). A fold without loss_log.jsonl (trained before it
    existed) makes the time unknown, and says so."""
    log = write_log(tmp_path / 'ck' / 'compare_t_mrnet' / 'loss_log.jsonl', START, iteration(1, 1, 0.05, G_L1=1.0),
                    iteration(1, 2, 0.05, G_L1=1.0), validation(1, 12.3))
    assert iteration_seconds(str(log)) == pytest.approx(0.05)
    assert compare.run_iteration_seconds(Run('mrnet', 'MRNet', 'mrnet', [], 'compare_t_mrnet'),
                                         str(tmp_path / 'ck')) == pytest.approx(0.05)
    assert capsys.readouterr().out == ''
    write_log(tmp_path / 'ck' / 'compare_t_e_fold0' / 'loss_log.jsonl', iteration(1, 1, 0.05, G_L1=1.0))
    assert math.isnan(compare.run_iteration_seconds(Run('e', 'ensemble', 'mrnet', [], 'compare_t_e', folds=2),
                                                    str(tmp_path / 'ck')))
    out = capsys.readouterr().out
    assert 'ensemble: no training log for programs' in out and 'compare_t_e_fold1' in out and 'unknown' in out
    assert math.isnan(iteration_seconds(str(tmp_path / 'missing.jsonl')))


def test_ingredients_table_reads_training_times_from_the_jsonl_logs(tmp_path: Path):
    """Each row's training time: the mean of its members' iteration records, summed over the folds; NaN, shown
    '-', for a row trained before loss_log.jsonl existed (its loss_log.txt is not parsed)."""
    folder = tmp_path / 'results' / 'compare_t'
    run = {'loss_log': '../../checkpoints/compare_t_e_fold0/loss_log.txt'}
    record = {'members': ['compare_t_e_fold0', 'compare_t_e_fold1']}
    write_log(tmp_path / 'checkpoints' / 'compare_t_e_fold0' / 'loss_log.jsonl', iteration(1, 1, 0.05),
              iteration(1, 2, 0.07), validation(1, 12.3))
    (tmp_path / 'checkpoints' / 'compare_t_e_fold1').mkdir()
    (tmp_path / 'checkpoints' / 'compare_t_e_fold1' / 'loss_log.txt').write_text(
        '(epoch: 1, iters: 1, time: 0.050, data: 0.000) G_L1: 1.000\n')
    assert math.isnan(ingredients.training_seconds(ingredients.member_logs(str(folder), run, record)))
    write_log(tmp_path / 'checkpoints' / 'compare_t_e_fold1' / 'loss_log.jsonl', iteration(1, 1, 0.1))
    assert ingredients.training_seconds(ingredients.member_logs(str(folder), run, record)) == pytest.approx(0.06 + 0.1)
    assert math.isnan(ingredients.training_seconds(ingredients.member_logs(str(folder), run, {})))
    assert (ingredients_table.ratio(1.234), ingredients_table.ratio(math.nan)) == ('1.23', '-')


def test_ingredients_rows_score_ms_ssim_from_the_fused_volume(tmp_path: Path):
    """A row's MAE, PSNR and SSIM are the means of metrics.csv's fused volume rows; its MS-SSIM is scored from the
    fused volume against the subject's CT and mask (SynthRAD2025's [-1024, 3000] HU window): 1 for a perfect
    prediction, the masked MS-SSIM of the noisy one."""
    from evaluation.comparison.ingredients import fused_scores
    from evaluation.metrics import masked_ms_ssim
    from inference.export.volume_file import write_image
    from util.image_io import reference_image
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 1500, (12, 14, 10)).astype(np.float32)
    mask = np.zeros(ct.shape, np.float32)
    mask[2:10, 3:11, 2:8] = 1
    root, test_dir = tmp_path / 'data', tmp_path / 'res' / 'run' / 'test_latest'
    for name, volume in (('ct', ct), ('mask', mask)):
        write_image(volume, reference_image(volume, np.eye(4)), str(root / 's1' / f'{name}.nii.gz'))
    rows = [{'level': 'volume', 'subject': 's1', 'plane': 'fused', 'mae': 10, 'psnr': 30, 'ssim': 0.9},
            {'level': 'volume', 'subject': 's1', 'plane': 'x', 'mae': 99, 'psnr': 1, 'ssim': 0.1}]
    test_dir.mkdir(parents=True)
    with open(test_dir / 'metrics.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['level', 'subject', 'plane', 'mae', 'psnr', 'ssim'])
        writer.writeheader()
        writer.writerows(rows)
    run = {'test_dir': str(test_dir)}
    for pred, perfect in ((ct, True), (ct + rng.normal(0, 600, ct.shape).astype(np.float32), False)):
        write_image(pred, reference_image(pred, np.eye(4)), str(test_dir / 'volumes' / 's1_fake_B_fused.nii.gz'))
        scores = fused_scores(str(tmp_path / 'res'), run, str(root))
        assert (scores['mae'], scores['psnr'], scores['ssim']) == (10, 30, 0.9)
        expected = 1.0 if perfect else masked_ms_ssim(pred, ct, mask > 0, (-1024.0, 3000.0))
        assert expected < 0.999 or perfect
        assert scores['ms_ssim'] == pytest.approx(expected, rel=1e-6)


def test_loss_curve_figure_says_which_runs_have_no_jsonl_log(tmp_path: Path, monkeypatch):
    write_log(tmp_path / 'new' / 'loss_log.jsonl', START, iteration(1, 2, 0.1, G_L1=5.0),
              iteration(1, 4, 0.1, G_L1=4.0))
    (tmp_path / 'old').mkdir()
    (tmp_path / 'old' / 'loss_log.txt').write_text('(epoch: 1, iters: 2, time: 0.1, data: 0.0) G_L1: 5.000\n')
    write_log(tmp_path / 'quiet' / 'loss_log.jsonl', START)              # nothing logged (--print_freq too large)
    results = [Result(label, 'mrnet', loss_log=str(tmp_path / label / 'loss_log.txt'))
               for label in ('new', 'old', 'quiet')]
    drawn = []
    monkeypatch.setattr(figures.Figure, 'savefig', lambda fig, path, **kwargs: drawn.append(fig))
    assert figures.plot_loss_curves(results, str(tmp_path / 'loss_curves.png'))
    new, old = drawn[0].axes
    assert new.get_title() == 'new' and new.lines[0].get_ydata().tolist() == [5.0, 4.0]
    assert old.get_title() == 'old' and not old.lines
    assert 'no loss_log.jsonl' in old.texts[0].get_text()
    assert not figures.plot_loss_curves(results[2:], str(tmp_path / 'none.png'))
