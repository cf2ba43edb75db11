"""The docs/beyond_the_paper.md tables from compare.py runs of ``--ablation synthrad2025``: per budget, each row's
fused-volume MAE (HU), PSNR, SSIM (from its metrics.csv) and MS-SSIM (SynthRAD2025's, computed here from the fused
volume and the subject's CT and mask), all inside the body mask, beside the PSNR and SSIM of the whole volume (no
mask: the air around the body counts), the MAE change against plain MRNet, and the training and prediction cost as
ratios to plain MRNet of the same call (training: mean computation time per image from each run's loss_log.jsonl,
summed over the folds of an ensemble, '-' for runs trained before that log existed; prediction: compare.py's
per-slice time of the whole test-time path).

    python scripts/ingredients_table.py --dataset demo short=results/compare_A_40 long=results/compare_A_200

``--absolute``: the cost in each row's own units instead of ratios (images trained, training TFLOPs, the training
loop's seconds, test.py's seconds per volume, peak memory of training and of test.py), as for rows compared at
equal training time (compare.py --time_budget_min, the 3D row).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from evaluation.comparison.ingredients import REFERENCE, budget_rows  # noqa: E402
from evaluation.comparison.results import options_path  # noqa: E402
from util.cli import run_cli  # noqa: E402

def ratio(value: float) -> str:
    """A cost ratio with two decimals, '-' when unknown."""
    return f'{value:.2f}' if math.isfinite(value) else '-'


def number(value: float, digits: int = 0) -> str:
    """``value`` with ``digits`` decimals, '-' when unknown."""
    return f'{value:.{digits}f}' if math.isfinite(value) else '-'


def absolute_markdown(dataset: str, budgets: dict[str, str]) -> str:
    """One table for all budgets: scores and each row's cost in its own units."""
    lines = ['| budget | row | MAE (HU) | PSNR (dB) | SSIM | MS-SSIM | images trained | training TFLOPs | '
             'training loop s | prediction s / volume | peak MiB training | peak MiB test.py |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for budget, folder in budgets.items():
        for r in budget_rows(folder)[0]:
            s, c = r['scores'], r['cost']
            scores = (f"{s['mae']:.1f} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['ms_ssim']:.4f}" if s
                      else 'not measured | | |')
            lines.append(f"| {budget} | {r['label']} | {scores} | {number(c['images'])} | {number(c['tflops'], 3)} | "
                         f"{number(c['loop_seconds'])} | {number(c['volume_seconds'], 1)} | "
                         f"{number(c['train_peak_mib'])} | {number(c['test_peak_mib'])} |")
    return '\n'.join([f'**{dataset}**', '', *lines, ''])


def markdown(dataset: str, budgets: dict[str, str]) -> str:
    lines = []
    for budget, folder in budgets.items():
        rows, options = budget_rows(folder)
        slices = options['shared'].get('max_dataset_size', '?')
        ref = next((r['scores'] for r in rows if r['key'] == REFERENCE and r['scores']), None)
        lines += [f'**{dataset}, {budget} budget ({slices} training slices)**', '',
                  '| row | MAE (HU) | vs MRNet | PSNR (dB) | SSIM | MS-SSIM | whole PSNR (dB) | whole SSIM | '
                  'training time x | prediction time x |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in rows:
            s = r['scores']
            if s is None:
                lines.append(f"| {r['label']} | not measured | | | | | | | | |")
                continue
            change = f"{100 * (s['mae'] / ref['mae'] - 1):+.1f} %" if ref else '-'
            lines.append(f"| {r['label']} | {s['mae']:.1f} | {change} | {s['psnr']:.2f} | {s['ssim']:.4f} | "
                         f"{s['ms_ssim']:.4f} | {s['psnr_whole']:.2f} | {s['ssim_whole']:.4f} | {ratio(r['train'])} | "
                         f"{ratio(r['predict'])} |")
        unknown = [r['label'] for r in rows if r['scores'] is not None and not math.isfinite(r['train'])]
        if unknown:
            lines += ['', f"Training time '-': unknown for {', '.join(unknown)} (a run of the row, or of MRNet, has "
                          f"no loss_log.jsonl: it was trained before that log existed; compare.py --force retrains)."]
        lines.append('')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', required=True, help='name of the data set, for the table titles')
    p.add_argument('--absolute', action='store_true',
                   help='cost in each row\'s own units (images, TFLOPs, seconds, MiB) instead of ratios to MRNet')
    p.add_argument('budgets', nargs='+', metavar='BUDGET=FOLDER', help='comparison folders <results>/compare_TAG')
    args = p.parse_args(argv)
    budgets = {}
    for item in args.budgets:
        label, eq, folder = item.partition('=')
        if not eq or not os.path.isfile(options_path(folder)):
            raise ValueError(f'{item}: expected BUDGET=FOLDER with FOLDER a compare.py result folder '
                             f'(holding shared_options.json)')
        budgets[label] = folder
    text = (absolute_markdown if args.absolute else markdown)(args.dataset, budgets)
    print(text)
    return text


if __name__ == '__main__':
    run_cli(main)
