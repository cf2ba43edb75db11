"""Score synthesized volumes made anywhere (another toolkit, a challenge submission) with this toolkit's metrics
code: the SynthRAD2023 set (MAE in HU, PSNR, SSIM inside the body mask) or, with ``--metrics synthrad2025``,
SynthRAD2025's (MAE, PSNR, masked MS-SSIM), exactly as test.py scores its own volumes; optionally add them as a
row to a comparison made by scripts/compare.py.

    python scripts/evaluate.py --pred DIR --gt DIR [--mask DIR] [--out scores.csv]
    python scripts/evaluate.py --pred sub/ --pred_pattern '{subject}_sct.nii.gz' --gt /data/synthrad/brain
    python scripts/evaluate.py --pred sub/ --pred_pattern '{subject}/sct.mha' --gt /data/synthrad2025 \
        --metrics synthrad2025 --split all                                        # every subject must be there
    python scripts/evaluate.py --pred DIR --gt DIR --append TAG --label "Method X"   # a row in compare_TAG

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
import glob
import os
import re
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data.layouts import MASK_NAME, find_modality, find_subject_file  # noqa: E402
from data.splits import ALL_SPLIT, list_subjects, load_split  # noqa: E402
from util.cli import run_cli  # noqa: E402
from evaluation.comparison.results import VOLUME_PLANES, Stat, external_paths, options_path, safe_label, tag_dir  # noqa: E402
from util.json_file import read_json, write_json  # noqa: E402
from evaluation.scoring import write_csv  # noqa: E402
from util.image_io import read_image  # noqa: E402
from evaluation.metrics import METRIC_SETS, metric_window, volume_metrics_or_nan  # noqa: E402
from util.geometry import Geometry  # noqa: E402
from util.body_mask import body_mask  # noqa: E402
from util.intensity import intensity_map, modality_kind  # noqa: E402

SUBJECT = '{subject}'


def find_predictions(pred_dir: str, pattern: str) -> dict[str, str]:
    """{subject: path} of the files under ``pred_dir`` that match ``pattern`` (``{subject}`` stands for the
    subject name; may contain '/'). FileNotFoundError when the folder is missing or nothing matches."""
    if SUBJECT not in pattern:
        raise ValueError(f'--pred_pattern "{pattern}" must contain {SUBJECT}')
    if not os.path.isdir(pred_dir):
        raise FileNotFoundError(f'--pred {pred_dir}: folder not found')
    regex = re.compile(re.escape(pattern).replace(re.escape(SUBJECT), '(?P<subject>[^/]+)') + '$')
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(pred_dir), pattern.replace(SUBJECT, '*')))):
        m = regex.match(os.path.relpath(path, pred_dir).replace(os.sep, '/'))
        if m:
            found[m.group('subject')] = path
    if not found:
        raise FileNotFoundError(f'--pred {pred_dir}: no file matches --pred_pattern "{pattern}"')
    return found


def check_same_grid(path: str, img, ref_path: str, ref_img, tol: float) -> None:
    """ValueError naming both files when ``img`` is not on ``ref_img``'s voxel grid (shape, affine)."""
    why = Geometry.of(ref_img).mismatch(Geometry.of(img), tol)
    if why:
        raise ValueError(f'{path} does not match the ground truth {ref_path}: {why}')


def score_subject(pred_path: str, gt_path: str, mask_path: str | None, modality: str,
                  affine_tol: float = 1e-3, metrics: str = 'synthrad2023') -> tuple[dict[str, float], dict[str, str]]:
    """(the ``metrics`` set, {metric: why it is NaN}) of one predicted volume (source units, HU for CT) against its
    ground truth inside the mask: CT clipped to the challenge's HU window, MR to the ground truth's normalisation
    window (evaluation.scoring)."""
    truth, truth_img = read_image(gt_path)
    pred, pred_img = read_image(pred_path)
    check_same_grid(pred_path, pred_img, gt_path, truth_img, affine_tol)
    kind = modality_kind(modality)
    if mask_path:
        mask_data, mask_img = read_image(mask_path)
        check_same_grid(mask_path, mask_img, gt_path, truth_img, affine_tol)
        mask = mask_data > 0
    else:
        mask = body_mask([(truth, kind)])
    mr_window = None
    if kind != 'ct':
        m = intensity_map('mr', truth, mask, gt_path)
        mr_window = (m.low, m.high)
    return volume_metrics_or_nan(pred, truth, mask, metric_window(metrics, kind, mr_window), metrics)


def select_split(pred: dict[str, str], gt_dir: str, split: str) -> dict[str, str]:
    """The predictions of the subjects of ``split`` (a split file under ``<gt_dir>/splits/``, or ``all`` subject
    folders of --gt); FileNotFoundError lists the subjects without a prediction."""
    subjects = load_split(gt_dir, split, list_subjects(gt_dir), seed=0) if split != ALL_SPLIT else \
        list_subjects(gt_dir)
    missing = [s for s in subjects if s not in pred]
    if missing:
        raise FileNotFoundError(f'--split {split}: {len(missing)} of the {len(subjects)} subjects of {gt_dir} have no '
                                f'prediction: {", ".join(missing[:10])}{" ..." if len(missing) > 10 else ""}')
    return {s: pred[s] for s in subjects}


def evaluate(pred: dict[str, str], gt_dir: str, mask_dir: str | None, modality: str, plane: str,
             affine_tol: float = 1e-3, metrics: str = 'synthrad2023') -> tuple[list[dict], dict[str, str]]:
    """Rows in metrics.csv form (level 'volume', subject, plane, then the ``metrics`` set: mae, psnr, ssim or
    ms_ssim), one per scored subject, and subject -> why it could not be scored. Missing files raise
    FileNotFoundError before anything is scored."""
    files = {}
    for subject, pred_path in pred.items():
        gt_path = find_subject_file(gt_dir, subject, modality)
        if gt_path is None:
            raise FileNotFoundError(f'{pred_path}: no ground truth for subject {subject} under --gt {gt_dir} '
                                    f'(looked for {subject}/{modality}.<ext>, {subject}/{subject}_{modality}.<ext>, '
                                    f'{subject}/{subject}-{modality}.<ext> and {subject}.<ext>)')
        if mask_dir:
            mask_path = find_subject_file(mask_dir, subject, MASK_NAME)
            if mask_path is None:
                raise FileNotFoundError(f'--mask {mask_dir}: no mask for subject {subject}')
        else:
            mask_path = find_modality(os.path.join(gt_dir, subject), subject, MASK_NAME) \
                if os.path.isdir(os.path.join(gt_dir, subject)) else None
            if mask_path is None:
                print(f'{subject}: no mask file, using a body mask computed from {gt_path}')
        files[subject] = (pred_path, gt_path, mask_path)
    rows, failed = [], {}
    for subject, (pred_path, gt_path, mask_path) in files.items():
        try:
            scores, problems = score_subject(pred_path, gt_path, mask_path, modality, affine_tol, metrics)
        except (OSError, ValueError) as exc:
            failed[subject] = str(exc)
            print(f'ERROR: subject {subject}: {exc}; going on with the others', file=sys.stderr)
            continue
        for metric, why in problems.items():
            print(f'WARNING: subject {subject}: {metric.upper()} not computed: {why}', file=sys.stderr)
        rows.append({'level': 'volume', 'subject': subject, 'plane': plane, **scores})
    return rows, failed


def append_to_comparison(results_dir: str, tag: str, label: str, rows: list[dict], meta: dict) -> str:
    """Store ``rows`` as the outside result ``label`` of comparison ``tag`` and rebuild its report; returns the
    page. ValueError when the TAG does not exist, the label is one of its runs, or the subjects are not its
    test subjects."""
    folder = tag_dir(results_dir, tag)
    if not os.path.isfile(options_path(folder)):
        raise FileNotFoundError(f'--append {tag}: no comparison at {folder} (run scripts/compare.py --name {tag} '
                                f'first, or pass its --results_dir)')
    options = read_json(options_path(folder))
    if label in [r['label'] for r in options['runs']]:
        raise ValueError(f'--label {label}: a trained run of {tag} already has this name')
    expected, got = set(options['data']['test_subjects']), {r['subject'] for r in rows}
    if got != expected:
        raise ValueError(f'--append {tag}: the comparison\'s test subjects are {sorted(expected)}, but the '
                         f'predictions cover {sorted(got)} (missing {sorted(expected - got)}, extra '
                         f'{sorted(got - expected)}); score the same subjects')
    key = safe_label(label)
    meta_path, csv_path = external_paths(folder, key)
    os.makedirs(os.path.dirname(csv_path), exist_ok=True)
    write_csv(csv_path, rows)
    write_json(meta_path, {**meta, 'label': label})
    options['external'] = [k for k in options.get('external', []) if k != key] + [key]
    write_json(options_path(folder), options)
    from data.layouts import subject_files
    from evaluation.comparison.report import write_report
    return write_report(folder, subject_files)


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
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    pred = find_predictions(args.pred, args.pred_pattern)
    if args.split:
        pred = select_split(pred, args.gt, args.split)
    rows, failed = evaluate(pred, args.gt, args.mask, args.modality, args.plane, args.affine_tol, args.metrics)
    unit = ' (HU)' if modality_kind(args.modality) == 'ct' else ''
    names = METRIC_SETS[args.metrics]
    print(f'{"subject":<24}' + ''.join(f'{m.upper() + (unit if m == "mae" else ""):>22}' for m in names))
    for r in rows:
        print(f'{r["subject"]:<24}' + ''.join(f'{r[m]:>22.4f}' for m in names))
    stats = {m: Stat.of(r[m] for r in rows) for m in names}
    summary = [f'{stats[m].mean:.4f} ± {stats[m].std:.4f}' for m in names]
    print(f'{"mean ± std":<24}' + ''.join(f'{text:>22}' for text in summary))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_csv(args.out, rows)
    if failed:
        raise ValueError(f'{len(failed)} of {len(pred)} subject(s) could not be scored: '
                         + '; '.join(f'{s}: {why}' for s, why in failed.items())
                         + (f' (the others are in {args.out})' if args.out and rows else ''))
    if args.append:
        label = args.label or os.path.basename(os.path.normpath(args.pred))
        meta = {'pred': os.path.abspath(args.pred), 'pattern': args.pred_pattern, 'gt': os.path.abspath(args.gt),
                'metrics': args.metrics,
                'mask': os.path.abspath(args.mask) if args.mask else None, 'modality': args.modality,
                'plane': args.plane, 'files': {s: os.path.abspath(p) for s, p in pred.items()}}
        page = append_to_comparison(args.results_dir, args.append, label, rows, meta)
        print(f'added "{label}" to {page}')
    return rows


if __name__ == '__main__':
    run_cli(main)
