"""Scoring test results for test.py.

- :class:`SliceEvaluator` (2D paired data): PSNR and SSIM of every predicted slice against its target in [-1, 1]
  (data range 2), written to ``metrics.csv`` with a mean +- std table at the top of the result page.
- :class:`VolumeEvaluator` (triplanar_aligned): the same per-slice rows, plus every subject's slices put back
  into one volume per plane and a fused one, at the source shape, orientation, affine and intensity scale (HU
  for CT), written as float32 NIfTI under ``volumes/`` (with ``<name>_<pred>_disagreement``, the voxel-wise
  standard deviation of the planes, --tta flips and ensemble members in target units, when there are two planes
  or a spread) and scored with the ``--metrics`` set (SynthRAD2023: MAE, PSNR, SSIM; SynthRAD2025: MAE, PSNR,
  MS-SSIM; in the body mask); the page gets a summary per plane and fused, and per subject the three orthogonal
  mid-slices of input, synthesized, ground truth and absolute error (as in the paper's Figs. 3-4).

Both follow ``add(data: collated batch, visuals: name -> Tensor (N, C, H, W), spread=None) -> None`` and
``finish(webpage) -> dict``.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np
import torch

from util.checkpoint import atomic_write
from util.drawing import colorize, mid_slice_image
from util.image_io import read_image
from evaluation.metrics import METRIC_SETS, metric_window, slice_metrics, volume_metrics_or_nan, volume_problems
from util.util import output_name, save_image
from util.slicing import PLANES, PLANE_NAMES
from inference.reassembly import VolumeAssembler
from util.intensity import modality_kind
from util.nifti import save_nifti

CSV_FIELDS = ['level', 'subject', 'plane', 'slice', 'name', 'mae', 'psnr', 'ssim']
FIGURE_HEIGHT = 160      # pixels of each mid-slice montage in the result page
FIGURE_WIDTH = 320       # shown width of each montage: input, synthesized, truth and error fit one 1400-pixel screen


def add_volume_metric_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--metrics``, the per-volume metric set, for datasets of volumes (``dataset.volumetric``)."""
    parser.add_argument('--metrics', default='synthrad2023', choices=sorted(METRIC_SETS),
                        help='volume metrics of test.py: synthrad2023 (MAE, PSNR, SSIM) or synthrad2025 (MAE, '
                             'PSNR, masked MS-SSIM), each as its challenge computes them')
    return parser


def make_evaluator(opt: argparse.Namespace, result_dir: str, dataset, **options):
    """What test.py and validation score results with: a :class:`VolumeEvaluator` (predictions put back into
    NIfTI volumes and scored per volume) for a dataset of volumes, per-image PSNR/SSIM (:class:`SliceEvaluator`)
    otherwise; ``options`` go to the evaluator (``write=False``: score only)."""
    if dataset.volumetric:
        return VolumeEvaluator(opt, result_dir, dataset, **options)
    return SliceEvaluator(opt, result_dir, write=options.get('write', True))


def mean_std(values: list[float]) -> str:
    """'mean ± std' of the finite values (identical images give PSNR = inf and are left out)."""
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    return f'{v.mean():.4f} ± {v.std():.4f}' if v.size else '-'


def summary_sections(summary: dict) -> dict[str, dict]:
    """An evaluator's summary as {section: {metric: value}}: a SliceEvaluator's flat {'n', 'psnr', 'ssim'} becomes
    {'slice': {...}}; a VolumeEvaluator's is already so."""
    return summary if all(isinstance(v, dict) for v in summary.values()) else {'slice': summary}


def write_csv(path: str, rows: list[dict]) -> None:
    """``rows`` (dicts with keys from CSV_FIELDS, plus any other metric columns such as ms_ssim) as a CSV file with
    a header, written atomically."""
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in CSV_FIELDS]

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS + extra)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(write, path, binary=False)


class SliceEvaluator:
    """Per-slice PSNR/SSIM of visual ``pred`` against ``target`` (both in [-1, 1], data range 2). Batches without
    both visuals (e.g. single or unaligned test sets) are skipped silently."""

    def __init__(self, opt, result_dir: str, pred: str = 'fake_B', target: str = 'real_B', write: bool = True):
        self.result_dir, self.pred, self.target, self.write = result_dir, pred, target, write
        self.rows: list[dict] = []

    def add(self, data: dict, visuals: dict[str, torch.Tensor], spread: torch.Tensor | None = None) -> None:
        """Scores each slice; ``spread`` is not used (2D results have no volume to map it into)."""
        if self.pred not in visuals or self.target not in visuals:
            return
        pred = visuals[self.pred].detach().float().cpu().numpy()
        target = visuals[self.target].detach().float().cpu().numpy()
        names = data.get('name', data.get('A_paths'))
        for k in range(pred.shape[0]):
            row = {'level': 'slice', 'name': output_name(str(names[k])),
                   **slice_metrics(pred[k], target[k])}
            if 'subject' in data:
                row.update(subject=data['subject'][k], plane=data['plane'][k], slice=int(data['slice_index'][k]))
            self.rows.append(row)

    def on_page(self, data: dict, k: int) -> bool:
        """Whether item ``k`` of the batch gets its row of images on the result page: always, for 2D data."""
        return True

    def summary(self, rows: list[dict] | None = None) -> dict[str, float]:
        rows = self.rows if rows is None else rows
        return {'n': len(rows), **{m: float(np.mean([r[m] for r in rows if math.isfinite(r[m])] or [math.nan]))
                                   for m in ('psnr', 'ssim')}}

    def finish(self, webpage) -> dict:
        """Write ``metrics.csv`` and the summary table; returns {'n', 'psnr', 'ssim'} (means), {} when nothing
        was scored."""
        if not self.rows:
            return {}
        if not self.write:
            return self.summary()
        write_csv(os.path.join(self.result_dir, 'metrics.csv'), self.rows)
        webpage.add_header(f'Per-slice metrics ({self.pred} vs {self.target}, images in [-1, 1], data range 2)',
                           top=True)
        webpage.add_table(['', 'slices', 'PSNR (dB)', 'SSIM'],
                          [['all', len(self.rows), mean_std([r['psnr'] for r in self.rows]),
                            mean_std([r['ssim'] for r in self.rows])]], top=True)
        return self.summary()


class VolumeEvaluator:
    """Reassembles the predicted slices of a TriplanarAlignedDataset into volumes and scores them. The prediction
    is the first of the visuals ``preds`` a model has ('fake_B' of pix2pix, CycleGAN and MRNet; 'fake' of
    ``--model test``). A subject is finished (written, scored, freed) as soon as all its slices have arrived;
    subjects left incomplete (--num_test, --max_dataset_size) are reported and not written.

    One subject never costs the others their results: a metric a subject's volume cannot have (thinner than the
    SSIM window) is announced before any prediction and left empty (NaN) in its rows; a subject whose volume
    cannot be written or scored is listed in :attr:`failed` (name -> reason) and on the page, and the rest go
    on."""

    def __init__(self, opt, result_dir: str, dataset, preds: tuple[str, ...] = ('fake_B', 'fake'),
                 target: str = 'real_B', write: bool = True, truths: dict[str, np.ndarray] | None = None):
        """write: False scores only (no NIfTI, CSV or figures; validation during training); truths: a dict that
        keeps each subject's canonical target volume (source units) once read, shared between evaluators."""
        self.dataset, self.preds, self.pred, self.fuse = dataset, preds, preds[0], opt.fuse
        self.metrics = opt.metrics
        self.metric_names = METRIC_SETS[self.metrics]
        self.result_dir, self.write = result_dir, write
        self.truths = {} if truths is None else truths
        self.volume_dir = os.path.join(result_dir, 'volumes')
        self.slices = SliceEvaluator(opt, result_dir, preds[0], target, write)
        self.expected = {name: sum(c.values()) for name, c in dataset.slice_counts().items()}
        self.kind = modality_kind(dataset.target)
        self.unit = 'HU' if self.kind == 'ct' else 'source units'
        self.assemblers: dict[str, VolumeAssembler] = {}
        self.spreads: dict[str, VolumeAssembler] = {}      # TTA / ensemble spread, per subject
        self.rows: list[dict] = []
        self.figures: list[tuple[str, list[np.ndarray], list[str]]] = []
        self.failed: dict[str, str] = {}
        self.problems: dict[str, dict[str, str]] = {}
        for name, subject in dataset.subjects.items():
            problems = volume_problems(subject.geometry.canonical_shape, self.metrics)
            if problems:
                self.problems[name] = problems
                print(f'WARNING: subject {name}: ' + '; '.join(f'no volume {m.upper()}: {why}'
                                                             for m, why in problems.items()), file=sys.stderr)
        self.page_slices = int(getattr(opt, 'page_slices', 0))
        self._shown: dict[tuple[str, str], set[int]] = {}

    def on_page(self, data: dict, k: int) -> bool:
        """Whether slice ``k`` of the batch gets its row of images on the result page: with ``--page_slices N``
        the N slices of each subject and plane at 1/(N+1) .. N/(N+1) of the body's extent (the central one
        included for odd N; edge slices hold little body), every slice with 0. Volumes and metrics use them all."""
        if self.page_slices <= 0:
            return True
        key = (data['subject'][k], data['plane'][k])
        if key not in self._shown:
            body = [i for i, f in enumerate(self.dataset.subjects[key[0]].foreground[key[1]]) if f > 0]
            body = body or list(range(len(self.dataset.subjects[key[0]].foreground[key[1]])))
            n = self.page_slices
            self._shown[key] = {body[min(len(body) - 1, round((j + 1) * (len(body) - 1) / (n + 1)))]
                                for j in range(n)}
        return int(data['slice_index'][k]) in self._shown[key]

    def add(self, data: dict, visuals: dict[str, torch.Tensor], spread: torch.Tensor | None = None) -> None:
        """One batch of predicted slices; ``spread`` (N, 1, H, W) the TTA flips' / ensemble members' standard
        deviation in [-1, 1] units (inference/test_time.py), which joins the subject's disagreement volume."""
        if self.pred not in visuals:
            self.pred = next((p for p in self.preds if p in visuals), None)
            if self.pred is None:
                raise ValueError(f'no prediction to put back into volumes: the model shows {", ".join(visuals)}, '
                                 f'none of {", ".join(self.preds)}')
            self.slices.pred = self.pred
        self.slices.add(data, visuals)
        pred = visuals[self.pred].detach().float().cpu()
        for k, name in enumerate(data['subject']):
            if name not in self.assemblers:
                geometry = self.dataset.subjects[name].geometry
                self.assemblers[name] = VolumeAssembler(geometry.canonical_shape, geometry.zooms, self.dataset.mode)
            assembler = self.assemblers[name]
            assembler.add(data['plane'][k], int(data['slice_index'][k]), pred[k])
            if spread is not None:
                if name not in self.spreads:
                    self.spreads[name] = VolumeAssembler(assembler.shape, assembler.zooms, self.dataset.mode, fill=0.0)
                self.spreads[name].add(data['plane'][k], int(data['slice_index'][k]), spread[k].detach().float().cpu())
            if assembler.n_slices == self.expected[name]:
                try:
                    self._finish_subject(name)
                except (OSError, ValueError, RuntimeError) as exc:
                    self.failed[name] = str(exc)
                    print(f'ERROR: subject {name}: {exc}; going on with the others', file=sys.stderr)

    def window(self, subject) -> tuple[float, float]:
        """Clip range and data range of the volume metrics: the --metrics challenge's HU window for CT
        (SynthRAD2023 [-1024, 3000], SynthRAD2025 [-1024, 3000]), the target's normalisation window (source units)
        for MR."""
        m = subject.maps[self.dataset.target]
        return metric_window(self.metrics, self.kind, (m.low, m.high))

    def _finish_subject(self, name: str) -> None:
        subject = self.dataset.subjects[name]
        assembler = self.assemblers.pop(name)
        spreads = self.spreads.pop(name, None)
        target_map = subject.maps[self.dataset.target]
        path = subject.paths[self.dataset.target]
        if self.write or name not in self.truths:
            truth, reference = read_image(path)
            self.truths[name] = truth = subject.geometry.to_canonical(truth)
        truth = self.truths[name]
        arrays = self.dataset.arrays(name)
        mask = np.asarray(arrays['mask']) > 0
        window = self.window(subject)
        volumes = {p: assembler.volumes[p] for p in assembler.planes}
        volumes['fused'] = assembler.fused(self.fuse)
        scores, rows = {}, []
        for label, volume in volumes.items():
            pred = target_map.denormalise(volume)
            if self.write:
                os.makedirs(self.volume_dir, exist_ok=True)
                save_nifti(subject.geometry.from_canonical(pred), reference,
                           os.path.join(self.volume_dir, f'{name}_{self.pred}_{label}.nii.gz'))
            scores[label], problems = volume_metrics_or_nan(pred, truth, mask, window, self.metrics)
            for metric, why in problems.items():
                self.problems.setdefault(name, {}).setdefault(metric, why)
            rows.append({'level': 'volume', 'subject': name, 'plane': label, **scores[label]})
        if not self.write:
            self.rows += rows
            return
        disagreement = assembler.disagreement(target_map, spreads)
        if disagreement is not None:
            save_nifti(subject.geometry.from_canonical(disagreement), reference,
                       os.path.join(self.volume_dir, f'{name}_{self.pred}_disagreement.nii.gz'))
        fused = volumes['fused']
        error = np.abs(target_map.denormalise(fused) - truth)
        self.figures.append(self._figure(name, subject, [np.asarray(arrays[self.dataset.source], np.float32), fused,
                                                        target_map.normalise(truth), error], scores['fused'],
                                         assembler.planes))
        self.rows += rows     # only a subject that went through completely gets rows

    def _figure(self, name: str, subject, volumes: list[np.ndarray], scores: dict,
                planes: list[str]) -> tuple[str, list[np.ndarray], list[str]]:
        """Montages (sagittal | coronal | axial mid-slices) of input, synthesized, truth and |error|."""
        low, high = self.window(subject)
        error_max = (high - low) / 8
        unit = self.unit
        zooms = subject.geometry.zooms
        gray = [_montage(v, zooms) for v in volumes[:3]]
        error = _montage(volumes[3] / error_max * 2 - 1, zooms)
        error_rgb = colorize(error)
        captions = [f'{name}: input {self.dataset.source}',
                    f'synthesized {self.dataset.target} ({self.fuse} of {"".join(planes)}): MAE {scores["mae"]:.2f} '
                    f'{unit}, PSNR {scores["psnr"]:.2f} dB, {self.metric_names[2].upper().replace("_", "-")} '
                    f'{scores[self.metric_names[2]]:.4f}',
                    f'ground truth {self.dataset.target}', f'|error|, 0 to {error_max:.0f} {unit}']
        return name, [*gray, error_rgb], captions

    def finish(self, webpage) -> dict:
        """Write metrics.csv (slice and volume rows), the summary table and the subject rows at the top of the
        page; returns {'slice': {...}, 'x' | 'y' | 'z' | 'fused': {'n', 'mae', 'psnr', 'ssim'}}."""
        for name, assembler in self.assemblers.items():
            print(f'WARNING: {name}: {assembler.n_slices} of {self.expected[name]} slices were predicted; '
                  f'its volume is not written (run the whole test set to get it)', file=sys.stderr)
        if not self.write:
            return self.summary()
        write_csv(os.path.join(self.result_dir, 'metrics.csv'), self.slices.rows + self.rows)
        unit = self.unit
        names = self.metric_names
        ssim_title = names[2].upper().replace('_', '-')
        if self.kind == 'ct':
            low, high = metric_window(self.metrics, 'ct')
            window = f'clipped to [{low:g}, {high:g}] HU'
        else:
            window = "clipped to the target's window"
        webpage.add_header(f'Volume metrics of {self.dataset.target} (MAE in {unit}; PSNR and {ssim_title} {window}; '
                           f'inside the body mask; {self.metrics}) and per-slice metrics ([-1, 1], data range 2), '
                           f'mean ± std', top=True)
        table = []
        for label in [*PLANES, 'fused']:
            rows = [r for r in self.rows if r['plane'] == label]
            slices = [r for r in self.slices.rows if r.get('plane') == label]
            if not rows and not slices:
                continue
            title = f'{label} ({PLANE_NAMES[label]})' if label in PLANE_NAMES else label
            table.append([title, len(rows), *(mean_std([r[m] for r in rows]) for m in names),
                          len(slices) if slices else '-',       # the fused volume has no slices of its own
                          mean_std([r['psnr'] for r in slices]), mean_std([r['ssim'] for r in slices])])
        webpage.add_table(['plane', 'subjects', f'MAE ({unit})', 'PSNR (dB)', ssim_title, 'slices', 'slice PSNR (dB)',
                           'slice SSIM'], table, top=True)
        if self.assemblers:
            webpage.add_text(f'incomplete, not written: {", ".join(self.assemblers)}', top=True)
        for name, why in self.failed.items():
            webpage.add_text(f'failed, not scored: {name}: {why}', top=True)
        for name, problems in self.problems.items():
            webpage.add_text(f'{name}: ' + '; '.join(f'{m.upper()} not computed ({why})'
                                                     for m, why in problems.items()), top=True)
        for name, images, captions in self.figures:
            files = []
            for label, image in zip(('input', 'synthesized', 'truth', 'error'), images):
                files.append(f'{name}_volume_{label}.png')
                save_image(image, os.path.join(webpage.get_image_dir(), files[-1]))
            webpage.add_images(files, captions, files, width=FIGURE_WIDTH, top=True)
        return self.summary()

    def summary(self) -> dict:
        """{'slice': {'n', 'psnr', 'ssim'}, 'x' | 'y' | 'z' | 'fused': {'n', 'mae', 'psnr', 'ssim' or 'ms_ssim'}}
        (means of the finite values over the finished subjects)."""
        out = {'slice': self.slices.summary()}
        for label in [*PLANES, 'fused']:
            rows = [r for r in self.rows if r['plane'] == label]
            if rows:
                out[label] = {'n': len(rows),
                              **{m: _finite_mean([r[m] for r in rows]) for m in self.metric_names}}
        return out


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _montage(volume: np.ndarray, zooms: tuple[float, float, float]) -> np.ndarray:
    """uint8 image of the sagittal, coronal and axial mid-slices of a canonical volume in [-1, 1], each at its
    physical aspect ratio and FIGURE_HEIGHT pixels high, side by side with a 4-pixel gap."""
    parts = []
    for axis in range(3):
        parts += [mid_slice_image(volume, zooms, axis, FIGURE_HEIGHT), np.zeros((FIGURE_HEIGHT, 4), np.uint8)]
    return np.concatenate(parts[:-1], axis=1)
