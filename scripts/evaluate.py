"""Score synthesized volumes made anywhere (another toolkit, a challenge submission) with this toolkit's metrics
code: the SynthRAD2023 set (MAE in HU, PSNR, SSIM inside the body mask) or, with ``--metrics synthrad2025``,
SynthRAD2025's (MAE, PSNR, masked MS-SSIM), exactly as test.py scores its own volumes; optionally add them as a
row to a comparison made by scripts/compare.py.

    python scripts/evaluate.py --pred DIR --gt DIR [--mask DIR] [--out scores.csv]
    python scripts/evaluate.py --pred sub/ --pred_pattern '{subject}_sct.nii.gz' --gt /data/synthrad/brain
    python scripts/evaluate.py --pred sub/ --pred_pattern '{subject}/sct.mha' --gt /data/synthrad2025 \
        --metrics synthrad2025 --split all                                        # every subject must be there
    python scripts/evaluate.py --pred DIR --gt DIR --append TAG --label "Method X"   # a row in compare_TAG
    python scripts/evaluate.py --pred DIR --gt DIR --dose photon,proton --out scores.csv     # + dose (docs/dose.md)

Predictions: files ``--pred_pattern`` (default ``{subject}.nii.gz``; NIfTI, .mha, .mhd or .nrrd) under --pred.
Ground truth: the ``--modality`` volume of each subject under --gt, either in a subject folder in any dataset layout
(data/layouts.py: ``<subject>/ct.nii.gz``, ``ct.mha``, ``<subject>_ct.nii.gz`` ...) or flat (``<subject>.nii.gz``).
Mask: the same under --mask (file ``mask`` in a subject folder, or ``<subject>.<ext>``); without --mask, the
``mask`` file of the ground truth's subject folder, or else a body mask computed from the ground truth as the
dataset does. A prediction must have the ground truth's shape and affine. ``--split NAME`` scores the subjects of
``<gt>/splits/NAME.txt`` and ``--split all`` every subject folder of --gt; both refuse a missing prediction.

Missing files are reported before anything is scored. A subject that cannot be scored (a prediction off the
ground truth's grid, an unreadable file) does not cost the others: their scores are printed and written, then
the failures are reported, each with its subject (exit status 2). A metric a volume cannot have (thinner than the
SSIM window, empty mask) is left empty (NaN) with a warning naming the subject.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from evaluation.comparison.results import VOLUME_PLANES, Stat  # noqa: E402
from evaluation.external import append_to_comparison, evaluate, find_predictions, select_split  # noqa: E402
from evaluation.metrics import METRIC_SETS  # noqa: E402
from evaluation.scoring import write_csv  # noqa: E402
from options.dose_options import add_dose_arguments, dose_record_path, make_dose_scorer  # noqa: E402
from util.cli import run_cli  # noqa: E402
from util.intensity import modality_kind  # noqa: E402
from util.json_file import write_json  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pred', required=True, help='folder of predicted volumes')
    p.add_argument('--pred_pattern', default='{subject}.nii.gz',
                   help='file names of the predictions under --pred; {subject} is the subject name')
    p.add_argument('--gt', required=True, help='folder of the ground truth (dataset layout or flat)')
    p.add_argument('--mask', default=None, help='folder of body masks (default: the ground truth\'s mask files)')
    p.add_argument('--modality', default='ct', help='ground-truth modality name: ct (HU) or an MR name')
    p.add_argument('--metrics', default='synthrad2023', choices=sorted(METRIC_SETS),
                   help='synthrad2023 (MAE, PSNR, SSIM) or synthrad2025 (MAE, PSNR, masked MS-SSIM)')
    p.add_argument('--split', default=None, help='score the subjects of <gt>/splits/SPLIT.txt, or "all" subject '
                   'folders of --gt; a subject without a prediction is an error (default: every prediction found)')
    p.add_argument('--plane', default='fused', choices=VOLUME_PLANES,
                   help='the table column the volumes belong to (a 3D prediction is "fused")')
    p.add_argument('--affine_tol', type=float, default=1e-3, help='largest affine difference (mm) accepted')
    p.add_argument('--out', default=None, help='write the per-subject scores to this CSV')
    p.add_argument('--append', default=None, metavar='TAG', help='add the scores as a row of results/compare_TAG')
    p.add_argument('--label', default=None, help='row name for --append (default: the --pred folder name)')
    p.add_argument('--results_dir', default='./results', help='where compare_TAG is (with --append)')
    return add_dose_arguments(p)


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    pred = find_predictions(args.pred, args.pred_pattern)
    if args.split:
        pred = select_split(pred, args.gt, args.split)
    dose = make_dose_scorer(args, modality_kind(args.modality), args.gt)   # refused now: no CT, no pyRadPlan
    rows, failed = evaluate(pred, args.gt, args.mask, args.modality, args.plane, args.affine_tol, args.metrics,
                            dose)
    unit = ' (HU)' if modality_kind(args.modality) == 'ct' else ''
    names = METRIC_SETS[args.metrics] + (tuple(dose.columns) if dose else ())
    print(f'{"subject":<24}' + ''.join(f'{m.upper() + (unit if m == "mae" else ""):>22}' for m in names))
    for r in rows:
        print(f'{r["subject"]:<24}' + ''.join(f'{r[m]:>22.4f}' for m in names))
    stats = {m: Stat.of(r[m] for r in rows) for m in names}
    summary = [f'{stats[m].mean:.4f} ± {stats[m].std:.4f}' for m in names]
    print(f'{"mean ± std":<24}' + ''.join(f'{text:>22}' for text in summary))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_csv(args.out, rows)
        if dose:
            write_json(dose_record_path(args.out), dose.record())
    if failed:
        raise ValueError(f'{len(failed)} of {len(pred)} subject(s) could not be scored: '
                         + '; '.join(f'{s}: {why}' for s, why in failed.items())
                         + (f' (the others are in {args.out})' if args.out and rows else ''))
    if args.append:
        label = args.label or os.path.basename(os.path.normpath(args.pred))
        meta = {'pred': os.path.abspath(args.pred), 'pattern': args.pred_pattern, 'gt': os.path.abspath(args.gt),
                'metrics': args.metrics,
                'mask': os.path.abspath(args.mask) if args.mask else None, 'modality': args.modality,
                'plane': args.plane, 'files': {s: os.path.abspath(p) for s, p in pred.items()},
                'dose': dose.record() if dose else None}
        page = append_to_comparison(args.results_dir, args.append, label, rows, meta)
        print(f'added "{label}" to {page}')
    return rows


if __name__ == '__main__':
    run_cli(main)
