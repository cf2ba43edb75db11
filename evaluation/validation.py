"""Validation during training (the paper's early stopping, section IV-B): every ``--val_freq`` epochs the ``val``
split is scored, the best networks are kept as ``best_net_<name>.pth`` and ``--patience`` stops a run that no
longer improves.

Scores are those of test.py (evaluation/scoring.py): per-slice PSNR/SSIM in [-1, 1] and, for volumes
(triplanar_aligned), the ``--metrics`` set of the fused volume (MAE in HU for CT, PSNR, SSIM inside the body mask).
A 3D network (``--model unet3d``) is scored as test.py scores it: each val volume whole, by Gaussian-blended sliding
windows of its training patch (inference/sliding_window.py, overlap 0.5, ``--tta`` as given).
``--val_metric`` picks the one that decides (default: volume MAE for CT, volume PSNR for MR, slice PSNR for 2D data).

What can be cached is: the val dataset (and its slice store) is built once per run, the target volumes are read
once, and nothing is written but the scores. The state (best score and epoch, epochs without improvement, the
history) travels in the training counters, so ``--continue_train`` keeps it; ``validation.json`` next to the
checkpoints says which epoch ``best_net_*.pth`` holds and how it scored.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from data import create_dataset
from evaluation.metrics import METRIC_SETS
from evaluation.scoring import make_evaluator, summary_sections
from inference.sliding_window import DEFAULT_OVERLAP, sliding_window
from inference.test_time import run_test
from models.generators.unet3d import is_volume_generator
from data.patch3d_dataset import parse_patch_size
from util.checkpoint import atomic_write

# name -> (summary section, key, higher is better)
METRICS = {'mae': ('fused', 'mae', False), 'psnr': ('fused', 'psnr', True), 'ssim': ('fused', 'ssim', True),
           'ms_ssim': ('fused', 'ms_ssim', True), 'slice_psnr': ('slice', 'psnr', True),
           'slice_ssim': ('slice', 'ssim', True)}
BEST_LABEL = 'best'
RECORD_FILE = 'validation.json'
VAL_BATCH_FACTOR = 4    # validation batch on a GPU, in training batches: no gradients, so memory allows it


def add_validation_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument('--val_freq', type=int, default=0,
                        help='score the val split every N epochs (and after the last one), keep the best networks as '
                             'best_net_*.pth (test.py --epoch best); 0 turns validation off')
    parser.add_argument('--val_metric', default='auto', choices=['auto', *METRICS],
                        help='score that picks the best epoch: mae, psnr, ssim (fused volume, --metrics '
                             'synthrad2023) or ms_ssim (--metrics synthrad2025), slice_psnr, slice_ssim; auto: mae for '
                             'CT volumes, psnr for other volumes, slice_psnr for 2D data')
    parser.add_argument('--val_batch_size', type=int, default=0,
                        help=f'slices per forward pass in validation (no gradients); 0: --batch_size on the CPU, '
                             f'{VAL_BATCH_FACTOR} x --batch_size on a GPU')
    parser.add_argument('--patience', type=int, default=0,
                        help='with --val_freq: stop after N epochs without a better validation score (0: never)')
    return parser


def validation_options(opt: argparse.Namespace) -> argparse.Namespace:
    """The options of the val split: those of training with --phase val, every slice in order, no flips or
    augmentation, one process."""
    val = argparse.Namespace(**vars(opt))
    val.phase, val.isTrain, val.serial_batches, val.no_flip = 'val', False, True, True
    val.max_dataset_size, val.world_size, val.rank, val.distributed = float('inf'), 1, 0, False
    val.augment = False
    on_gpu = opt.device.type == 'cuda'
    val.batch_size = opt.val_batch_size or opt.batch_size * (VAL_BATCH_FACTOR if on_gpu else 1)
    if is_volume_generator(getattr(opt, 'netG', '')):
        val.batch_size = 1                       # whole volumes of different shapes, as test.py
    if hasattr(val, 'min_foreground'):
        val.min_foreground = 0.0                 # scored like the test split: every slice
    if 'crop' in val.preprocess:
        val.load_size = val.crop_size            # as test.py: no random crop
    return val


def better(score: float, best: float | None, higher: bool) -> bool:
    if not math.isfinite(score):
        return False
    return best is None or (score > best if higher else score < best)


def format_scores(summary: dict) -> str:
    """'slice_psnr 25.1 slice_ssim 0.81 mae 80.2 psnr 27.3 ssim 0.90' from an evaluator summary."""
    parts = []
    for name, (section, key, _) in METRICS.items():
        if section in summary and key in summary[section]:
            parts.append(f'{name} {summary[section][key]:.4g}')
    return ' '.join(parts)


class Validator:
    """Scores the val split with a model; keeps the best score, its epoch and the patience count.

    ``state()`` / ``load_state()`` give what goes into the training counters (``counters['validation']``).
    """

    def __init__(self, opt: argparse.Namespace):
        if opt.val_freq < 0 or opt.patience < 0:
            raise ValueError(f'--val_freq and --patience must be >= 0 (got {opt.val_freq} and {opt.patience})')
        self.opt, self.val_opt = opt, validation_options(opt)
        start = time.perf_counter()
        try:
            self.loader = create_dataset(self.val_opt)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f'--val_freq {opt.val_freq} needs a val split, which cannot be read: {e}. Add one '
                             f'(e.g. <dataroot>/splits/val.txt) or pass --val_freq 0') from None
        self.save_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.volume = is_volume_generator(getattr(opt, 'netG', ''))    # a 3D network: whole volumes, sliding windows
        self.patch = parse_patch_size(opt.patch_size) if self.volume else None
        self.truths: dict = {}
        evaluator = self.evaluator()          # a volume evaluator names the subjects some metric cannot score
        volumetric = self.loader.dataset.volumetric
        self.metric = opt.val_metric
        if self.metric == 'auto':
            self.metric = 'slice_psnr' if not volumetric else 'mae' if evaluator.kind == 'ct' else 'psnr'
        if METRICS[self.metric][0] == 'fused' and not volumetric:
            raise ValueError(f'--val_metric {self.metric} scores volumes, which --dataset_mode {opt.dataset_mode} '
                             f'does not have; use slice_psnr or slice_ssim')
        section, key, self.higher = METRICS[self.metric]
        scored = METRIC_SETS.get(getattr(opt, 'metrics', 'synthrad2023'), ())
        if section == 'fused' and key not in scored:
            raise ValueError(f'--val_metric {self.metric}: --metrics {opt.metrics} scores {", ".join(scored)} of '
                             f'the fused volume, not {key}; choose one of those (or slice_psnr, slice_ssim)')
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped = False
        self.history: list[dict] = []
        print(f'validation: {len(self.loader)} {opt.dataset_mode} items of the val split every {opt.val_freq} '
              f'epoch(s), best by {self.metric} ({"higher" if self.higher else "lower"} is better)'
              + (f', patience {opt.patience} epochs' if opt.patience else '')
              + f'; set up in {time.perf_counter() - start:.1f} s')

    def evaluator(self):
        dataset = self.loader.dataset
        return make_evaluator(self.val_opt, self.save_dir, dataset, write=False,
                              **({'truths': self.truths} if dataset.volumetric else {}))

    def due(self, epoch: int, last_epoch: int) -> bool:
        return self.opt.val_freq > 0 and (epoch % self.opt.val_freq == 0 or epoch == last_epoch)

    def score(self, model) -> tuple[dict, float]:
        """Run ``model`` on every val item (eval mode, no gradients; training mode restored after); returns the
        evaluator's summary and the seconds it took."""
        start = time.perf_counter()
        evaluator = self.evaluator()
        with model.unwrapped_eval():                        # without DDP: only this process validates
            model.prepare_data(self.loader, self.val_opt)   # MRNet: SAM features from the cache, as in training
            for data in self.loader:
                if self.volume:
                    evaluator.add(data, self.whole_volumes(model, data))
                    continue
                model.set_input(data)
                run_test(model)
                evaluator.add(data, model.get_current_visuals())
        return summary_sections(evaluator.finish()), time.perf_counter() - start

    def whole_volumes(self, model, data: dict) -> dict:
        """A 3D network's visuals for val items ``data`` of whole volumes ``A`` (N, C, X, Y, Z) in [-1, 1]: its
        sliding-window output ``fake_B`` (same shape), as test.py makes it."""
        fake = [sliding_window(model.netG, a.to(model.device), self.patch, DEFAULT_OVERLAP, self.opt.tta)[0]
                for a in data['A']]
        return {'real_A': data['A'], 'fake_B': torch.stack(fake), 'real_B': data['B']}

    def update(self, epoch: int, summary: dict, seconds: float) -> bool:
        """Record the scores of ``epoch``; True when it is the best so far. Sets ``stopped`` when --patience
        epochs have passed since the best one."""
        section, key, _ = METRICS[self.metric]
        value = float(summary.get(section, {}).get(key, math.nan))
        improved = better(value, self.best, self.higher)
        if improved:
            self.best, self.best_epoch = value, epoch
        self.bad_epochs = epoch - self.best_epoch
        self.stopped = bool(self.opt.patience) and self.bad_epochs >= self.opt.patience
        self.history.append({'epoch': epoch, 'score': value, 'seconds': round(seconds, 2),
                             'scores': {name: summary[s][k] for name, (s, k, _) in METRICS.items()
                                        if s in summary and k in summary[s]}})
        return improved

    def message(self, epoch: int, summary: dict, seconds: float) -> str:
        best = f'{self.best:.4g} at epoch {self.best_epoch}' if self.best is not None else 'none yet'
        stop = f'; no better {self.metric} for {self.bad_epochs} epochs: early stop' if self.stopped else ''
        return (f'(validation epoch: {epoch}, time: {seconds:.1f} s) {format_scores(summary)} | '
                f'best {self.metric} {best}{stop}')

    def run(self, model, epoch: int, visualizer=None) -> bool:
        """Score ``epoch``, log it, save ``best_net_*.pth`` and ``validation.json`` when it is the best; returns
        whether training should stop (--patience)."""
        summary, seconds = self.score(model)
        if self.update(epoch, summary, seconds):
            model.save_networks(BEST_LABEL)
        message = self.message(epoch, summary, seconds)
        if visualizer is not None:
            visualizer.show_validation(message, self.metric, self.history)
        else:
            print(message)
        self.write_record()
        return self.stopped

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """What the training counters keep (plain values, so a weights-only checkpoint holds it)."""
        return {'metric': self.metric, 'best': self.best, 'best_epoch': self.best_epoch,
                'bad_epochs': self.bad_epochs, 'stopped': self.stopped, 'history': list(self.history)}

    def load_state(self, state: dict | None) -> None:
        """Restore :meth:`state`; a state of another metric is refused (the best score would not compare)."""
        if not state:
            return
        if state.get('metric') != self.metric:
            raise ValueError(f'this run was validated by {state.get("metric")}, now --val_metric is {self.metric}: '
                             f'resume with --val_metric {state.get("metric")}')
        self.best, self.best_epoch = state.get('best'), int(state.get('best_epoch', 0))
        self.bad_epochs, self.stopped = int(state.get('bad_epochs', 0)), bool(state.get('stopped', False))
        self.history = list(state.get('history', []))

    def write_record(self) -> None:
        """``validation.json``: metric, best score and epoch (of ``best_net_*.pth``), and every validation."""
        record = {'metric': self.metric, 'higher_is_better': self.higher, **self.state()}
        atomic_write(lambda f: json.dump(record, f, indent=1), os.path.join(self.save_dir, RECORD_FILE), binary=False)


def read_record(save_dir: str) -> dict | None:
    """The ``validation.json`` of a run, or None when it was not validated."""
    path = os.path.join(save_dir, RECORD_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def best_note(save_dir: str) -> str:
    """One line on what ``best_net_*.pth`` holds, for test.py --epoch best."""
    record = read_record(save_dir)
    if record is None or record.get('best') is None:
        return f'best checkpoint: no {RECORD_FILE} in {save_dir}, its epoch and score are unknown'
    return f'best checkpoint: epoch {record["best_epoch"]}, validation {record["metric"]} {record["best"]:.4g}'
