"""Scoring test results for test.py and for validation during training (drawing them is evaluation/result_page.py).

- :class:`SliceEvaluator` (2D paired data): PSNR and SSIM of every predicted slice against its target in [-1, 1]
  (data range 2), written to ``metrics.csv``.
- :class:`VolumeEvaluator` (triplanar_aligned): the same per-slice rows, plus every subject's slices put back
  into one volume per plane and a fused one (inference/reassembly.py), at the source shape, orientation, affine and
  intensity scale (HU for CT), written as float32 NIfTI under ``volumes/`` (with ``<name>_<pred>_disagreement``, the
  voxel-wise standard deviation of the planes, --tta flips and ensemble members in target units, when there are two
  planes or a spread) and scored with the ``--metrics`` set (evaluation/metrics.py, in the body mask).

Both follow ``add(data: collated batch, visuals: name -> Tensor (N, C, H, W), spread=None) -> list[ScoredSubject]``
(the subjects written and scored by this batch, for the result page) and ``finish() -> dict`` (the summary).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from data.slice_store import Subject
from evaluation.dose.columns import DOSE_RECORD
from evaluation.metrics import METRIC_SETS, finite_stats, metric_window, slice_metrics, volume_metrics_or_nan, \
    volume_problems
from inference.reassembly import VolumeAssembler, save_canonical
from util.checkpoint import atomic_write
from util.image_io import read_image
from util.intensity import modality_kind
from util.json_file import write_json
from util.slicing import PLANES
from util.util import output_name

CSV_FIELDS = ['level', 'subject', 'plane', 'slice', 'name', 'mae', 'psnr', 'ssim']


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


@dataclass
class ScoredSubject:
    """A subject whose volumes were written and scored, with what its figure on the result page shows
    (canonical arrays)."""
    name: str
    subject: Subject                      # the dataset's: geometry, intensity maps
    fused: np.ndarray                     # fused prediction, [-1, 1]
    truth: np.ndarray                     # target, source units (HU for CT)
    planes: list[str]                     # the planes fused
    scores: dict[str, float]              # the fused volume's --metrics set


class SliceEvaluator:
    """Per-slice PSNR/SSIM of visual ``pred`` against ``target`` (both in [-1, 1], data range 2). Batches without
    both visuals (e.g. single or unaligned test sets) are skipped silently."""

    def __init__(self, opt, result_dir: str, pred: str = 'fake_B', target: str = 'real_B', write: bool = True):
        self.result_dir, self.pred, self.target, self.write = result_dir, pred, target, write
        self.rows: list[dict] = []
        self.failed: dict[str, str] = {}      # nothing fails alone: 2D items have no volume to write

    def add(self, data: dict, visuals: dict[str, torch.Tensor],
            spread: torch.Tensor | None = None) -> list[ScoredSubject]:
        """Scores each slice; ``spread`` is not used (2D results have no volume to map it into). No subjects."""
        if self.pred not in visuals or self.target not in visuals:
            return []
        pred = visuals[self.pred].detach().float().cpu().numpy()
        target = visuals[self.target].detach().float().cpu().numpy()
        names = data.get('name', data.get('A_paths'))
        for k in range(pred.shape[0]):
            row = {'level': 'slice', 'name': output_name(str(names[k])),
                   **slice_metrics(pred[k], target[k])}
            if 'subject' in data:
                row.update(subject=data['subject'][k], plane=data['plane'][k], slice=int(data['slice_index'][k]))
            self.rows.append(row)
        return []

    def summary(self) -> dict[str, float]:
        """{'n', 'psnr', 'ssim'}: the number of slices and the means of the finite values."""
        return {'n': len(self.rows), **{m: finite_stats([r[m] for r in self.rows])[0] for m in ('psnr', 'ssim')}}

    def finish(self) -> dict:
        """Write ``metrics.csv`` (unless write=False); returns :meth:`summary`, {} when nothing was scored."""
        if not self.rows:
            return {}
        if self.write:
            write_csv(os.path.join(self.result_dir, 'metrics.csv'), self.rows)
        return self.summary()


class VolumeEvaluator:
    """Reassembles the predicted slices of a TriplanarAlignedDataset into volumes and scores them. The prediction
    is the first of the visuals ``preds`` a model has ('fake_B' of pix2pix, CycleGAN and MRNet; 'fake' of
    ``--model test``). A subject is finished (written, scored, freed) as soon as all its slices have arrived;
    subjects left incomplete (--num_test, --max_dataset_size) are reported and not written.

    One subject never costs the others their results: a metric a subject's volume cannot have (thinner than the
    SSIM window) is announced before any prediction and left empty (NaN) in its rows; a subject whose volume
    cannot be written or scored is listed in :attr:`failed` (name -> reason) and the rest go on."""

    def __init__(self, opt, result_dir: str, dataset, preds: tuple[str, ...] = ('fake_B', 'fake'),
                 target: str = 'real_B', write: bool = True, truths: dict[str, np.ndarray] | None = None):
        """write: False scores only (no NIfTI or CSV; validation during training); truths: a dict that keeps each
        subject's canonical target volume (source units) once read, shared between evaluators."""
        self.dataset, self.preds, self.pred, self.fuse = dataset, preds, preds[0], opt.fuse
        self.metrics = opt.metrics
        self.composite = getattr(opt, 'body_composite', None)     # test.py --outside_body: air outside the body
        self.dose = getattr(opt, 'dose_scorer', None) if write else None   # test.py --dose (evaluation/dose/)
        self.metric_names = METRIC_SETS[self.metrics]
        self.result_dir, self.write = result_dir, write
        self.truths = {} if truths is None else truths
        self.volume_dir = os.path.join(result_dir, 'volumes')
        self.slices = SliceEvaluator(opt, result_dir, preds[0], target, write)
        self.expected = {name: sum(c.values()) for name, c in dataset.slice_counts().items()}
        self.kind = modality_kind(dataset.target)
        self.assemblers: dict[str, VolumeAssembler] = {}
        self.whole = False      # predictions came as whole volumes (a 3D network): no slices to summarise
        self.spreads: dict[str, VolumeAssembler] = {}      # TTA / ensemble spread, per subject
        self.rows: list[dict] = []
        self.failed: dict[str, str] = {}
        self.problems: dict[str, dict[str, str]] = {}
        for name, subject in dataset.subjects.items():
            problems = volume_problems(subject.geometry.canonical_shape, self.metrics)
            if problems:
                self.problems[name] = problems
                print(f'WARNING: subject {name}: ' + '; '.join(f'no volume {m.upper()}: {why}'
                                                             for m, why in problems.items()), file=sys.stderr)

    @property
    def incomplete(self) -> list[str]:
        """The subjects some of whose slices have not arrived (not written, not scored)."""
        return list(self.assemblers)

    def add(self, data: dict, visuals: dict[str, torch.Tensor],
            spread: torch.Tensor | None = None) -> list[ScoredSubject]:
        """One batch of predicted slices; ``spread`` (N, 1, H, W) the TTA flips' / ensemble members' standard
        deviation in [-1, 1] units (inference/test_time.py), which joins the subject's disagreement volume.
        Returns the subjects this batch completed that were written and scored (none with write=False)."""
        if self.pred not in visuals:
            self.pred = next((p for p in self.preds if p in visuals), None)
            if self.pred is None:
                raise ValueError(f'no prediction to put back into volumes: the model shows {", ".join(visuals)}, '
                                 f'none of {", ".join(self.preds)}')
            self.slices.pred = self.pred
        pred = visuals[self.pred].detach().float().cpu()
        whole = pred.dim() == 5         # whole volumes (N, C, X, Y, Z) of a 3D network: inference/volume_model.py
        self.whole |= whole
        if not whole:
            self.slices.add(data, visuals)
        scored = []
        for k, name in enumerate(data['subject']):
            if name not in self.assemblers:
                geometry = self.dataset.subjects[name].geometry
                self.assemblers[name] = VolumeAssembler(geometry.canonical_shape, geometry.zooms, self.dataset.mode)
            assembler = self.assemblers[name]
            if whole:
                assembler.put_volume(pred[k])
            else:
                assembler.add(data['plane'][k], int(data['slice_index'][k]), pred[k])
            if spread is not None:
                if name not in self.spreads:
                    self.spreads[name] = VolumeAssembler(assembler.shape, assembler.zooms, self.dataset.mode, fill=0.0)
                if whole:
                    self.spreads[name].put_volume(spread[k].detach().float().cpu())
                else:
                    self.spreads[name].add(data['plane'][k], int(data['slice_index'][k]),
                                           spread[k].detach().float().cpu())
            if whole or assembler.n_slices == self.expected[name]:
                try:
                    scored += self._finish_subject(name)
                except (OSError, ValueError, RuntimeError) as exc:
                    self.failed[name] = str(exc)
                    print(f'ERROR: subject {name}: {exc}; going on with the others', file=sys.stderr)
        return scored

    def window(self, subject) -> tuple[float, float]:
        """Clip range and data range of the volume metrics: the --metrics challenge's HU window for CT
        (evaluation/metrics.py), the target's normalisation window (source units) for MR."""
        m = subject.maps[self.dataset.target]
        return metric_window(self.metrics, self.kind, (m.low, m.high))

    def _finish_subject(self, name: str) -> list[ScoredSubject]:
        """Score the volumes of ``name`` (write=True: and write them); its :class:`ScoredSubject` when written."""
        subject = self.dataset.subjects[name]
        assembler = self.assemblers.pop(name)
        spreads = self.spreads.pop(name, None)
        target_map = subject.maps[self.dataset.target]
        path = subject.paths[self.dataset.target]
        if self.write or name not in self.truths:
            truth, reference = read_image(path)
            self.truths[name] = truth = subject.geometry.to_canonical(truth)
        truth = self.truths[name]
        mask = np.asarray(getattr(self.dataset, 'native_arrays', self.dataset.arrays)(name)['mask']) > 0
        window = self.window(subject)
        if self.composite is not None:        # inference/body_composite.py
            keep = self.composite.keep(mask, subject.geometry.zooms)
            for volumes in (assembler, spreads):
                if volumes is not None:
                    volumes.clear_outside(keep)
        volumes = {p: assembler.volumes[p] for p in assembler.planes}
        volumes['fused'] = assembler.fused(self.fuse)
        scores, rows = {}, []
        for label, volume in volumes.items():
            pred = target_map.denormalise(volume)
            if self.write:
                save_canonical(pred, subject.geometry, reference,
                               os.path.join(self.volume_dir, f'{name}_{self.pred}_{label}.nii.gz'))
            scores[label], problems = volume_metrics_or_nan(pred, truth, mask, window, self.metrics)
            for metric, why in problems.items():
                self.problems.setdefault(name, {}).setdefault(metric, why)
            rows.append({'level': 'volume', 'subject': name, 'plane': label, **scores[label]})
        if self.write:
            disagreement = assembler.disagreement(target_map, spreads)
            if disagreement is not None:
                save_canonical(disagreement, subject.geometry, reference,
                               os.path.join(self.volume_dir, f'{name}_{self.pred}_disagreement.nii.gz'))
        if self.dose is not None:       # the fused volume's dose columns
            dose = self.dose(name, os.path.join(self.volume_dir, f'{name}_{self.pred}_fused.nii.gz'), path,
                             os.path.dirname(path))
            scores['fused'].update(dose)
            rows[-1].update(dose)
        self.rows += rows     # only a subject that went through completely gets rows
        if not self.write:
            return []
        return [ScoredSubject(name, subject, volumes['fused'], truth, assembler.planes, scores['fused'])]

    def finish(self) -> dict:
        """Report the incomplete subjects, write metrics.csv (slice and volume rows; not with write=False);
        returns :meth:`summary`."""
        for name, assembler in self.assemblers.items():
            print(f'WARNING: {name}: {assembler.n_slices} of {self.expected[name]} slices were predicted; '
                  f'its volume is not written (run the whole test set to get it)', file=sys.stderr)
        if self.write:
            write_csv(os.path.join(self.result_dir, 'metrics.csv'), self.slices.rows + self.rows)
        if self.dose is not None:       # the dose columns' settings and notes beside them
            write_json(os.path.join(self.result_dir, DOSE_RECORD), self.dose.record())
        return self.summary()

    def summary(self) -> dict:
        """{'slice': {'n', 'psnr', 'ssim'}, 'x' | 'y' | 'z' | 'fused': {'n', 'mae', 'psnr', 'ssim' or 'ms_ssim'}}
        (means of the finite values over the finished subjects)."""
        out = {} if self.whole else {'slice': self.slices.summary()}
        for label in [*PLANES, 'fused']:
            rows = [r for r in self.rows if r['plane'] == label]
            if rows:
                out[label] = {'n': len(rows), **{m: finite_stats([r[m] for r in rows])[0] for m in self.metric_names}}
        fused = [r for r in self.rows if r['plane'] == 'fused']
        if self.dose is not None and fused:     # the fused volumes' dose columns (test.py --dose)
            out['dose'] = {'n': len(fused), **{c: finite_stats([r[c] for r in fused])[0] for c in self.dose.columns}}
        return out
