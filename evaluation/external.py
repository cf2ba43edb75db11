"""Scoring synthesized volumes made anywhere (another toolkit, a challenge submission) with this toolkit's metrics,
exactly as test.py scores its own volumes, and adding them as a row to a comparison (scripts/evaluate.py's library).

Predictions are found by a file pattern (``{subject}`` is the subject name), the ground truth by the dataset layouts
(data/layouts.py) or flat, the mask likewise or computed from the ground truth as the dataset does. A prediction
and a mask must lie on the ground truth's voxel grid (shape and affine).
"""
from __future__ import annotations

import glob
import os
import re
import sys

from data.layouts import MASK_NAME, find_modality, find_subject_file, subject_files
from data.splits import ALL_SPLIT, list_subjects, load_split
from evaluation.comparison.results import external_paths, options_path, safe_label, tag_dir
from evaluation.metrics import metric_window, volume_metrics_or_nan
from evaluation.scoring import write_csv
from util.body_mask import body_mask
from util.geometry import Geometry
from util.image_io import read_image
from util.intensity import intensity_map, modality_kind
from util.json_file import read_json, write_json
from util.mask_file import read_mask_on_grid

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
        mask = read_mask_on_grid(mask_path, Geometry.of(truth_img), affine_tol,
                                 lambda why: f'{mask_path} does not match the ground truth {gt_path}: {why}')
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
             affine_tol: float = 1e-3, metrics: str = 'synthrad2023', dose=None) -> tuple[list[dict], dict[str, str]]:
    """Rows in metrics.csv form (level 'volume', subject, plane, then the ``metrics`` set: mae, psnr, ssim or
    ms_ssim, then with ``dose`` (evaluation.dose.subject_dose.DoseScorer) its dose columns), one per scored
    subject, and subject -> why it could not be scored. Missing files raise FileNotFoundError before anything is
    scored."""
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
            if dose is not None:
                folder = os.path.join(gt_dir, subject)
                scores.update(dose(subject, pred_path, gt_path, folder if os.path.isdir(folder) else None))
        except (OSError, ValueError, RuntimeError) as exc:
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
    from evaluation.comparison.report import write_report       # figures: imported only when needed
    return write_report(folder, subject_files)
