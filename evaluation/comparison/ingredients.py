"""The docs/beyond_the_paper.md rows of a compare.py ``--ablation synthrad2025`` folder: each row's fused-volume MAE
(HU), PSNR, SSIM (its metrics.csv) and SynthRAD2025 MS-SSIM (scored here from the fused volume and the subject's CT
and mask), the PSNR and SSIM of the whole volume (no mask: what a planning system sees, air included), with its
training and prediction cost as ratios to plain MRNet of the same call."""
from __future__ import annotations

import csv
import math
import os

import numpy as np

from data.layouts import MASK_NAME, find_modality
from evaluation.comparison.results import options_path, run_record_path
from evaluation.external import score_subject
from evaluation.metrics import metric_window, volume_metrics
from util.image_io import read_image
from util.json_file import read_json
from util.training_log import LOG_NAME, iteration_seconds, training_summary

REFERENCE = 'mrnet'


def whole_volume_scores(pred_path: str, truth_path: str) -> dict[str, float]:
    """{'psnr_whole', 'ssim_whole'}: SynthRAD2023's PSNR and SSIM of a synthetic CT (HU) against its CT over the
    whole volume (every voxel counts, the air around the body too), both clipped to [-1024, 3000] HU."""
    pred, truth = read_image(pred_path)[0], read_image(truth_path)[0]
    scores = volume_metrics(pred, truth, np.ones(truth.shape, bool), metric_window('synthrad2023', 'ct'))
    return {'psnr_whole': scores['psnr'], 'ssim_whole': scores['ssim']}


def fused_scores(folder: str, run: dict, dataroot: str) -> dict[str, float] | None:
    """Mean over test subjects of the fused volume's MAE, PSNR, SSIM (metrics.csv, inside the body mask), MS-SSIM
    (computed, in the mask) and whole-volume PSNR and SSIM (computed, no mask: :func:`whole_volume_scores`)."""
    test_dir = os.path.join(folder, run['test_dir'])
    path = os.path.join(test_dir, 'metrics.csv')
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r['level'] == 'volume' and r['plane'] == 'fused']
    scores = {k: float(np.mean([float(r[k]) for r in rows])) for k in ('mae', 'psnr', 'ssim')}
    ms, whole = [], []
    for r in rows:
        subject = os.path.join(dataroot, r['subject'])
        pred = os.path.join(test_dir, 'volumes', f"{r['subject']}_fake_B_fused.nii.gz")
        truth = find_modality(subject, r['subject'], 'ct')
        mask = find_modality(subject, r['subject'], MASK_NAME)
        ms.append(score_subject(pred, truth, mask, 'ct', metrics='synthrad2025')[0]['ms_ssim'])
        whole.append(whole_volume_scores(pred, truth))
    scores['ms_ssim'] = float(np.mean(ms))
    scores.update({k: float(np.mean([w[k] for w in whole])) for k in ('psnr_whole', 'ssim_whole')})
    return scores


def member_logs(folder: str, run: dict, record: dict) -> list[str]:
    """The loss_log.jsonl of each member of a comparison row (the folds of an ensemble), beside the loss_log.txt
    that shared_options.json names; none when the row did not run."""
    checkpoints_dir = os.path.dirname(os.path.dirname(os.path.normpath(os.path.join(folder, run['loss_log']))))
    return [os.path.join(checkpoints_dir, m, LOG_NAME) for m in record.get('members', [])]


def training_seconds(logs: list[str]) -> float:
    """Mean computation time per training image (s) of a comparison row, summed over its members' ``logs``; NaN
    when the row did not run or a member has no such log (trained before it existed)."""
    return sum(iteration_seconds(log) for log in logs) if logs else math.nan


def absolute_cost(logs: list[str], record: dict) -> dict[str, float]:
    """A row's cost in its own units: images trained (slices or patches, all members), training TFLOPs, the
    training loop's seconds (what --time_budget_min counts, summed over members), test.py's
    seconds per volume, and the peak memory of training and of test.py (MiB; NaN where not recorded)."""
    ends = [training_summary(log) for log in logs]
    return {'images': record.get('train_images', math.nan), 'tflops': record.get('train_flops', math.nan) / 1e12,
            'loop_seconds': sum(e['train_seconds'] for e in ends) if ends else math.nan,
            'volume_seconds': record.get('volume_seconds', math.nan),
            'train_peak_mib': record.get('train_peak_rss_mib', math.nan),
            'test_peak_mib': record.get('test_peak_rss_mib', math.nan)}


def budget_rows(folder: str) -> tuple[list[dict], dict]:
    """Each run of a comparison folder with its scores and cost ratios to the MRNet row; and the folder's record."""
    options = read_json(options_path(folder))
    records = {r['key']: read_json(run_record_path(folder, r['key'])) for r in options['runs']
               if os.path.isfile(run_record_path(folder, r['key']))}
    ref = records.get(REFERENCE, {})
    logs = {run['key']: member_logs(folder, run, records.get(run['key'], {})) for run in options['runs']}
    train = {key: training_seconds(paths) for key, paths in logs.items()}
    rows = []
    for run in options['runs']:
        record = records.get(run['key'], {})
        scores = fused_scores(folder, run, options['data']['dataroot'])
        rows.append({'key': run['key'], 'label': run['label'], 'scores': scores,
                     'train': train[run['key']] / train.get(REFERENCE, math.nan),
                     'predict': record.get('inference_ms', math.nan) / ref.get('inference_ms', math.nan),
                     'cost': absolute_cost(logs[run['key']], record)})
    return rows, options
