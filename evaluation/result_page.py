"""The result page of test.py (``results/NAME/<split>_<epoch>/index.html``) for what evaluation/scoring.py scored:
which slices get their row of images (``--page_slices``), the summary table at the top (mean ± std of the finite
values), notes on the incomplete, failed and partly scored subjects, and per subject of a volume dataset the
sagittal, coronal and axial mid-slices of input, synthesized, ground truth and absolute error (as in the paper's
Figs. 3-4).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from evaluation.dose.page import add_dose_section
from evaluation.metrics import finite_stats, metric_window
from evaluation.scoring import ScoredSubject, SliceEvaluator, VolumeEvaluator
from util.drawing import colorize, mid_slice_image
from util.html import HTML
from util.slicing import PLANE_NAMES, PLANES
from util.util import save_image

FIGURE_HEIGHT = 160      # pixels of each mid-slice montage
FIGURE_WIDTH = 320       # shown width of each montage: input, synthesized, truth and error fit one 1400-pixel screen
FIGURE_LABELS = ('input', 'synthesized', 'truth', 'error')


def mean_std(values: list[float]) -> str:
    """'mean ± std' of the finite values (identical images give PSNR = inf and are left out), the value alone when
    there is one (a spread of one value says nothing), '-' without any."""
    mean, std, n = finite_stats(values)
    return '-' if not n else f'{mean:.4f}' if n == 1 else f'{mean:.4f} ± {std:.4f}'


def montage(volume: np.ndarray, zooms: tuple[float, float, float]) -> np.ndarray:
    """uint8 image of the sagittal, coronal and axial mid-slices of a canonical volume in [-1, 1], each at its
    physical aspect ratio and FIGURE_HEIGHT pixels high, side by side with a 4-pixel gap."""
    parts = []
    for axis in range(3):
        parts += [mid_slice_image(volume, zooms, axis, FIGURE_HEIGHT), np.zeros((FIGURE_HEIGHT, 4), np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


class ResultPage:
    """What test.py's page (``webpage``) shows of an evaluator's results, besides the rows of slice images that
    test.py saves for the slices :meth:`shows` picks."""

    def __init__(self, webpage: HTML | None, evaluator: SliceEvaluator | VolumeEvaluator, opt: argparse.Namespace):
        """``opt``: test.py's options (``--page_slices`` of a volume dataset)."""
        self.webpage, self.evaluator = webpage, evaluator
        self.volumes = isinstance(evaluator, VolumeEvaluator)
        self.page_slices = opt.page_slices if self.volumes else 0
        self._shown: dict[tuple[str, str], set[int]] = {}
        self.figures: list[tuple[str, list[np.ndarray], list[str]]] = []

    def shows(self, data: dict, k: int) -> bool:
        """Whether item ``k`` of the batch gets its row of images: every 2D item; with ``--page_slices N`` the N
        slices of each subject and plane at 1/(N+1) .. N/(N+1) of the body's extent (the central one included for
        odd N; edge slices hold little body), every slice with 0. Volumes and metrics use them all. A whole volume
        (a 3D network's item) gets none: its subject's mid-slice figure shows it."""
        if self.volumes and 'plane' not in data:
            return False
        if self.page_slices <= 0:
            return True
        key = (data['subject'][k], data['plane'][k])
        if key not in self._shown:
            foreground = self.evaluator.dataset.subjects[key[0]].foreground[key[1]]
            body = [i for i, f in enumerate(foreground) if f > 0] or list(range(len(foreground)))
            n = self.page_slices
            self._shown[key] = {body[min(len(body) - 1, round((j + 1) * (len(body) - 1) / (n + 1)))]
                                for j in range(n)}
        return int(data['slice_index'][k]) in self._shown[key]

    @property
    def unit(self) -> str:
        """The unit of the target's volume metrics."""
        return 'HU' if self.evaluator.kind == 'ct' else 'source units'

    def add_subject(self, scored: ScoredSubject) -> None:
        """Montages (sagittal | coronal | axial mid-slices) of input, synthesized, truth and |error| of a subject
        the evaluator wrote and scored, with their captions; they go on the page at :meth:`finish`."""
        ev, subject = self.evaluator, scored.subject
        source, target = ev.dataset.source, ev.dataset.target
        target_map = subject.maps[target]
        error = np.abs(target_map.denormalise(scored.fused) - scored.truth)
        low, high = ev.window(subject)
        error_max = (high - low) / 8
        zooms = subject.geometry.zooms
        gray = [montage(v, zooms) for v in (np.asarray(ev.dataset.arrays(scored.name)[source], np.float32),
                                            scored.fused, target_map.normalise(scored.truth))]
        error_rgb = colorize(montage(error / error_max * 2 - 1, zooms))
        ssim_name = ev.metric_names[2]
        scores = scored.scores
        how = f'{ev.fuse} of {"".join(scored.planes)}' if scored.planes else 'whole volume, 3D'
        captions = [f'{scored.name}: input {source}',
                    f'synthesized {target} ({how}): MAE {scores["mae"]:.2f} '
                    f'{self.unit}, PSNR {scores["psnr"]:.2f} dB, {ssim_name.upper().replace("_", "-")} '
                    f'{scores[ssim_name]:.4f}',
                    f'ground truth {target}', f'|error|, 0 to {error_max:.0f} {self.unit}']
        self.figures.append((scored.name, [*gray, error_rgb], captions))

    def finish(self) -> None:
        """The summary table, the notes and the subjects' montages at the top of the page (nothing for a 2D
        evaluator that scored nothing)."""
        if self.volumes:
            self._volume_summary()
        elif self.evaluator.rows:
            ev = self.evaluator
            self.webpage.add_header(f'Per-slice metrics ({ev.pred} vs {ev.target}, images in [-1, 1], data range 2)',
                                    top=True)
            self.webpage.add_table(['', 'slices', 'PSNR (dB)', 'SSIM'],
                                   [['all', len(ev.rows), mean_std([r['psnr'] for r in ev.rows]),
                                     mean_std([r['ssim'] for r in ev.rows])]], top=True)

    def _volume_summary(self) -> None:
        ev, webpage, unit = self.evaluator, self.webpage, self.unit
        names = ev.metric_names
        ssim_title = names[2].upper().replace('_', '-')
        if ev.kind == 'ct':
            low, high = metric_window(ev.metrics, 'ct')
            window = f'clipped to [{low:g}, {high:g}] HU'
        else:
            window = "clipped to the target's window"
        webpage.add_header(f'Volume metrics of {ev.dataset.target} (MAE in {unit}; PSNR and {ssim_title} {window}; '
                           f'inside the body mask; {ev.metrics}) and per-slice metrics ([-1, 1], data range 2), '
                           f'mean ± std', top=True)
        table = []
        for label in [*PLANES, 'fused']:
            rows = [r for r in ev.rows if r['plane'] == label]
            slices = [r for r in ev.slices.rows if r.get('plane') == label]
            if not rows and not slices:
                continue
            title = f'{label} ({PLANE_NAMES[label]})' if label in PLANE_NAMES else label
            table.append([title, len(rows), *(mean_std([r[m] for r in rows]) for m in names),
                          len(slices) if slices else '-',       # the fused volume has no slices of its own
                          mean_std([r['psnr'] for r in slices]), mean_std([r['ssim'] for r in slices])])
        webpage.add_table(['plane', 'subjects', f'MAE ({unit})', 'PSNR (dB)', ssim_title, 'slices', 'slice PSNR (dB)',
                           'slice SSIM'], table, top=True)
        if ev.incomplete:
            webpage.add_text(f'incomplete, not written: {", ".join(ev.incomplete)}', top=True)
        for name, why in ev.failed.items():
            webpage.add_text(f'failed, not scored: {name}: {why}', top=True)
        for name, problems in ev.problems.items():
            webpage.add_text(f'{name}: ' + '; '.join(f'{m.upper()} not computed ({why})'
                                                     for m, why in problems.items()), top=True)
        if ev.dose is not None:       # test.py --dose
            add_dose_section(webpage, ev.rows, ev.dose,
                             lambda name: os.path.join(ev.volume_dir, f'{name}_{ev.pred}_fused.nii.gz'))
        for name, images, captions in self.figures:
            files = [f'{name}_volume_{label}.png' for label in FIGURE_LABELS]
            for file, image in zip(files, images):
                save_image(image, os.path.join(webpage.get_image_dir(), file))
            webpage.add_images(files, captions, files, width=FIGURE_WIDTH, top=True)
