"""The docs/beyond_the_paper.md tables from compare.py runs of ``--ablation synthrad2025``: per budget, each row's
fused-volume MAE (HU), PSNR, SSIM (from its metrics.csv) and MS-SSIM (SynthRAD2025's, computed here from the fused
volume and the subject's CT and mask), the MAE change against plain MRNet, and the training and prediction cost as
ratios to plain MRNet of the same call (training: mean computation time per image from each run's loss_log.jsonl,
summed over the folds of an ensemble, '-' for runs trained before that log existed; prediction: compare.py's
per-slice time of the whole test-time path).

    python scripts/ingredients_table.py --dataset demo short=results/compare_A_40 long=results/compare_A_200
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from util.cli import run_cli  # noqa: E402
from evaluation.comparison.results import options_path, run_record_path  # noqa: E402
from util.json_file import read_json  # noqa: E402
from util.training_log import LOG_NAME, iteration_seconds  # noqa: E402

REFERENCE = 'mrnet'


def fused_scores(folder: str, run: dict, dataroot: str) -> dict[str, float] | None:
    """Mean over test subjects of the fused volume's MAE, PSNR, SSIM (metrics.csv) and MS-SSIM (computed)."""
    from data.layouts import MASK_NAME, find_modality
    from util.image_io import read_image
    from evaluation.metrics import CT_METRIC_WINDOWS, masked_ms_ssim
    test_dir = os.path.join(folder, run['test_dir'])
    path = os.path.join(test_dir, 'metrics.csv')
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r['level'] == 'volume' and r['plane'] == 'fused']
    scores = {k: float(np.mean([float(r[k]) for r in rows])) for k in ('mae', 'psnr', 'ssim')}
    ms = []
    for r in rows:
        subject = os.path.join(dataroot, r['subject'])
        pred, _ = read_image(os.path.join(test_dir, 'volumes', f"{r['subject']}_fake_B_fused.nii.gz"))
        truth, _ = read_image(find_modality(subject, r['subject'], 'ct'))
        mask, _ = read_image(find_modality(subject, r['subject'], MASK_NAME))
        ms.append(masked_ms_ssim(pred, truth, mask > 0, CT_METRIC_WINDOWS['synthrad2025']))
    scores['ms_ssim'] = float(np.mean(ms))
    return scores


def training_seconds(folder: str, run: dict, record: dict) -> float:
    """Mean computation time per training image (s) of a comparison row, summed over its members (the folds of
    an ensemble), from their loss_log.jsonl beside the loss_log.txt that shared_options.json names; NaN when the
    row did not run or a member has no such log (trained before it existed)."""
    checkpoints_dir = os.path.dirname(os.path.dirname(os.path.normpath(os.path.join(folder, run['loss_log']))))
    members = record.get('members', [])
    return sum(iteration_seconds(os.path.join(checkpoints_dir, m, LOG_NAME)) for m in members) if members \
        else math.nan


def budget_rows(folder: str) -> tuple[list[dict], dict]:
    """Each run of a comparison folder with its scores and cost ratios to the MRNet row; and the folder's record."""
    options = read_json(options_path(folder))
    records = {r['key']: read_json(run_record_path(folder, r['key'])) for r in options['runs']
               if os.path.isfile(run_record_path(folder, r['key']))}
    ref = records.get(REFERENCE, {})
    train = {run['key']: training_seconds(folder, run, records.get(run['key'], {})) for run in options['runs']}
    rows = []
    for run in options['runs']:
        record = records.get(run['key'], {})
        scores = fused_scores(folder, run, options['data']['dataroot'])
        rows.append({'key': run['key'], 'label': run['label'], 'scores': scores,
                     'train': train[run['key']] / train.get(REFERENCE, math.nan),
                     'predict': record.get('inference_ms', math.nan) / ref.get('inference_ms', math.nan)})
    return rows, options


def ratio(value: float) -> str:
    """A cost ratio with two decimals, '-' when unknown."""
    return f'{value:.2f}' if math.isfinite(value) else '-'


def markdown(dataset: str, budgets: dict[str, str]) -> str:
    lines = []
    for budget, folder in budgets.items():
        rows, options = budget_rows(folder)
        slices = options['shared'].get('max_dataset_size', '?')
        ref = next((r['scores'] for r in rows if r['key'] == REFERENCE and r['scores']), None)
        lines += [f'**{dataset}, {budget} budget ({slices} training slices)**', '',
                  '| row | MAE (HU) | vs MRNet | PSNR (dB) | SSIM | MS-SSIM | training time x | prediction time x |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|']
        for r in rows:
            s = r['scores']
            if s is None:
                lines.append(f"| {r['label']} | not measured | | | | | | |")
                continue
            change = f"{100 * (s['mae'] / ref['mae'] - 1):+.1f} %" if ref else '-'
            lines.append(f"| {r['label']} | {s['mae']:.1f} | {change} | {s['psnr']:.2f} | {s['ssim']:.4f} | "
                         f"{s['ms_ssim']:.4f} | {ratio(r['train'])} | {ratio(r['predict'])} |")
        unknown = [r['label'] for r in rows if r['scores'] is not None and not math.isfinite(r['train'])]
        if unknown:
            lines += ['', f"Training time '-': unknown for {', '.join(unknown)} (a run of the row, or of MRNet, has "
                          f"no loss_log.jsonl: it was trained before that log existed; compare.py --force retrains)."]
        lines.append('')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', required=True, help='name of the data set, for the table titles')
    p.add_argument('budgets', nargs='+', metavar='BUDGET=FOLDER', help='comparison folders <results>/compare_TAG')
    args = p.parse_args(argv)
    budgets = {}
    for item in args.budgets:
        label, eq, folder = item.partition('=')
        if not eq or not os.path.isfile(options_path(folder)):
            raise ValueError(f'{item}: expected BUDGET=FOLDER with FOLDER a compare.py result folder '
                             f'(holding shared_options.json)')
        budgets[label] = folder
    text = markdown(args.dataset, budgets)
    print(text)
    return text


if __name__ == '__main__':
    run_cli(main)
