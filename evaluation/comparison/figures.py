"""Figures of a comparison (matplotlib, no display needed): training loss curves, per-plane box plots of the
per-slice PSNR/SSIM, and slice strips as in the paper's Figs. 3-4 (input, every model's output, ground truth; a
zoomed region of interest; absolute-error maps on one shared colour scale; each output captioned with its PSNR).

Strips are cut from the NIfTI volumes that test.py (or an outside method) wrote, so they show exactly what was
scored, in source units (HU for CT) and at the voxels' physical aspect ratio.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from evaluation.comparison.results import PLANES, Result
from evaluation.metrics import SYNTHRAD_HU_RANGE, psnr
from util.intensity import CT_WINDOW, MR_PERCENTILES, intensity_map, modality_kind
from util.slicing import PLANE_NAMES, plane_axis, take_slice
from util.geometry import Geometry
from util.body_mask import body_mask
from util.training_log import LOG_NAME, read_training_log

ROI_FRACTION = 4          # the zoomed region is 1/4 of the slice's height and width
ERROR_PERCENTILE = 99.5   # the shared error scale ends at the largest model's 99.5th percentile
MIN_BODY_FRACTION = 0.05  # slices with less body than this are not picked as worst/median/best
TILE_INCHES = 2.0


# ----------------------------------------------------------------------------- loss curves

def loss_curves(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loss curves from a ``loss_log.jsonl`` (util.training_log): name -> (x in epochs, values).

    Its iteration records hold epoch E and I images counted from the start of E; x is E - 1 + I / (largest I
    seen), so a full epoch spans 1. Records repeated by a resumed run replace the earlier ones (same E and I); a
    non-finite loss (null) is NaN, a gap in the curve.
    """
    points: dict[tuple[int, int], dict[str, float]] = {}
    for r in read_training_log(path):
        if r['kind'] == 'iteration':
            points[(r['epoch'], r['iters'])] = {k: math.nan if v is None else v for k, v in r['losses'].items()}
    if not points:
        return {}
    per_epoch = max(i for _, i in points) or 1
    keys = sorted(points)
    names = list(dict.fromkeys(n for k in keys for n in points[k]))
    curves = {}
    for name in names:
        xs = [e - 1 + i / per_epoch for e, i in keys if name in points[(e, i)]]
        ys = [points[k][name] for k in keys if name in points[k]]
        curves[name] = (np.asarray(xs), np.asarray(ys))
    return curves


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def training_log_path(result: Result) -> str:
    """The run's loss_log.jsonl: beside the loss_log.txt that its record names."""
    return os.path.join(os.path.dirname(result.loss_log), LOG_NAME)


def plot_loss_curves(results: list[Result], path: str) -> bool:
    """One panel per trained run with its logged losses (its loss_log.jsonl) against epochs; a run trained before
    that log existed gets a panel that says so. False (nothing written) when no run logged any loss (e.g.
    --print_freq larger than an epoch) and none lacks the log."""
    logs = [(r.label, training_log_path(r)) for r in results if r.loss_log]
    curves = [(label, loss_curves(log) if os.path.isfile(log) else None) for label, log in logs]
    curves = [(label, c) for label, c in curves if c is None or c]
    if not curves:
        return False
    rows, cols = _grid(len(curves))
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout='constrained')
    for k, (label, c) in enumerate(curves):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_title(label)
        if c is None:
            ax.text(0.5, 0.5, f'no {LOG_NAME}:\ntrained before the training log\nfor programs existed',
                    ha='center', va='center', transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for name, (x, y) in c.items():
            ax.plot(x, y, marker='.' if len(x) < 20 else None, label=name)
        ax.set_xlabel('epoch')
        ax.set_ylabel('loss (weighted)')
        positive = all((y > 0).all() for _, y in c.values())
        ax.set_yscale('log' if positive else 'symlog')
        ax.legend(fontsize='small')
    fig.savefig(path, dpi=100)
    return True


def plot_metric_boxes(results: list[Result], metric: str, path: str) -> bool:
    """Box plots of the per-slice ``metric`` ('psnr' or 'ssim'), one panel per plane, one box per result with
    slices; False (nothing written) when no result has slices."""
    with_slices = [r for r in results if r.slices]
    planes = [p for p in PLANES if any(row['plane'] == p for r in with_slices for row in r.slices)]
    if not planes:
        return False
    title = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM'}[metric]
    fig = Figure(figsize=(max(4.0, 1.1 * len(with_slices) + 1.5) * len(planes), 3.8), layout='constrained')
    for k, plane in enumerate(planes):
        ax = fig.add_subplot(1, len(planes), k + 1)
        data = [[row[metric] for row in r.slices if row['plane'] == plane and math.isfinite(row[metric])]
                for r in with_slices]
        ax.boxplot(data, tick_labels=[r.label for r in with_slices], showmeans=True)
        ax.set_title(f'{plane} ({PLANE_NAMES[plane]})')
        ax.set_ylabel(f'per-slice {title}')
        ax.tick_params(axis='x', labelrotation=30)
    fig.savefig(path, dpi=100)
    return True


# ----------------------------------------------------------------------------- slice choice

@dataclass
class SliceRef:
    """A test slice ``<subject>_<plane><index:03d>`` (the name test.py gives it) and why it is shown."""
    subject: str
    plane: str
    index: int
    reason: str

    @property
    def name(self) -> str:
        return f'{self.subject}_{self.plane}{self.index:03d}'


def choose_slices(reference: Result, named: list[str],
                  body: Callable[[str], dict[str, np.ndarray]] | None = None) -> list[SliceRef]:
    """The worst, median and best slice of ``reference`` by per-slice PSNR, then the ``named`` slices; a slice
    chosen twice is shown once with both reasons.

    Worst, median and best are taken among slices whose subject has a written volume and, when ``body`` is
    given (subject -> plane -> body fraction of each slice), whose body fraction reaches MIN_BODY_FRACTION, so
    an empty slice at the edge of a volume is not shown as the worst. Raises ValueError for a name that is not
    a scored test slice.
    """
    fractions = {s: body(s) for s in {r['subject'] for r in reference.slices}} if body else {}

    def in_body(r: dict) -> bool:
        f = fractions.get(r['subject'], {}).get(r['plane'])
        return f is None or (0 <= r['slice'] < len(f) and f[r['slice']] >= MIN_BODY_FRACTION)
    rows = [r for r in reference.slices if math.isfinite(r['psnr'])
            and (r['subject'], r['plane']) in reference.volume_files and in_body(r)]
    rows.sort(key=lambda r: r['psnr'])
    picks: dict[str, SliceRef] = {}

    def add(row: dict, reason: str) -> None:
        ref = SliceRef(row['subject'], row['plane'], int(row['slice']), reason)
        if ref.name in picks:
            picks[ref.name].reason += f', {reason}'
        else:
            picks[ref.name] = ref
    if rows:
        for row, word in ((rows[0], 'worst'), (rows[len(rows) // 2], 'median'), (rows[-1], 'best')):
            add(row, f'{word} PSNR of {reference.label}')
    by_name = {r['name']: r for r in reference.slices}
    for name in named:
        if name not in by_name:
            examples = ', '.join(sorted(by_name)[:5])
            raise ValueError(f'--slices: "{name}" is not a test slice of {reference.label} (names are '
                             f'<subject>_<plane><index>, e.g. {examples})')
        add(by_name[name], 'asked for')
    return list(picks.values())


# ----------------------------------------------------------------------------- strips

@dataclass(frozen=True)
class DataInfo:
    """Where the test subjects' source volumes are and how their intensities are read."""
    dataroot: str
    source: str                 # modality of the network input (after --direction)
    target: str                 # modality it translates to
    ct_window: tuple[float, float] = CT_WINDOW
    mr_percentiles: tuple[float, float] = MR_PERCENTILES


def canonical_volume(path: str) -> tuple[np.ndarray, Geometry]:
    """A volume (any format util.image_io reads) in canonical RAS order and its geometry."""
    from util.image_io import read_image
    data, img = read_image(path)
    geometry = Geometry.of(img)
    return geometry.to_canonical(data), geometry


@dataclass
class SubjectData:
    """One test subject's input, ground truth and body mask (canonical RAS, source units) and their geometry."""
    source: np.ndarray
    truth: np.ndarray
    mask: np.ndarray
    geometry: Geometry
    source_path: str
    truth_path: str

    def body_fractions(self) -> dict[str, np.ndarray]:
        """plane -> fraction of each slice inside the body mask."""
        return {p: self.mask.mean(axis=tuple(a for a in range(3) if a != plane_axis(p))) for p in PLANES}


# (dataroot, subject, source modality, target modality) -> (source file, target file, mask file or None)
SubjectFiles = Callable[[str, str, str, str], tuple]


def load_subject(info: DataInfo, subject: str, find_files: SubjectFiles) -> SubjectData:
    """Read ``<dataroot>/<subject>``: the input and target volumes and the mask file that ``find_files`` names
    (data.layouts.subject_files knows every layout), or, without a mask file, the body mask the dataset computes.
    FileNotFoundError names a missing volume."""
    *paths, mask_path = find_files(info.dataroot, subject, info.source, info.target)
    for modality, path in zip((info.source, info.target), paths):
        if path is None:
            raise FileNotFoundError(f'{os.path.join(info.dataroot, subject)}: no {modality} volume for the strips of '
                                    f'subject {subject}')
    source, _ = canonical_volume(paths[0])
    truth, geometry = canonical_volume(paths[1])
    if mask_path:
        mask = canonical_volume(mask_path)[0] > 0
    else:
        mask = body_mask([(truth, modality_kind(info.target)), (source, modality_kind(info.source))])
    return SubjectData(source, truth, mask, geometry, paths[0], paths[1])


@dataclass
class Panel:
    """One strip column: a slice in source units, its display window and title; results also carry
    |prediction - truth| and the slice's PSNR."""
    title: str
    image: np.ndarray | None
    window: tuple[float, float]
    error: np.ndarray | None = None
    psnr: float = math.nan


def target_window(info: DataInfo, data: SubjectData) -> tuple[float, float]:
    """Display and PSNR window of the target: SynthRAD2023's [-1024, 3000] HU for CT, the target's own
    normalisation window for MR (as evaluation.scoring scores volumes)."""
    if modality_kind(info.target) == 'ct':
        return SYNTHRAD_HU_RANGE
    m = intensity_map('mr', data.truth, data.mask, data.truth_path, info.ct_window, info.mr_percentiles)
    return m.low, m.high


def prediction_file(result: Result, subject: str, plane: str) -> tuple[str | None, str]:
    """The volume of ``result`` to cut a ``plane`` slice from, and which it is: its own plane volume, else its
    fused one ('fused'); (None, '') when it has neither."""
    for label in (plane, 'fused'):
        path = result.volume_files.get((subject, label))
        if path and os.path.isfile(path):
            return path, label
    return None, ''


def strip_panels(ref: SliceRef, results: list[Result], info: DataInfo,
                 data: SubjectData) -> tuple[list[Panel], np.ndarray]:
    """Columns of a strip (input, each result, ground truth) and the slice's body mask."""
    axis = plane_axis(ref.plane)
    if not 0 <= ref.index < data.truth.shape[axis]:
        raise ValueError(f'slice {ref.name}: index {ref.index} is outside {data.truth_path} '
                         f'(shape {data.truth.shape})')
    low, high = target_window(info, data)
    in_map = intensity_map(modality_kind(info.source), data.source, data.mask, data.source_path, info.ct_window,
                           info.mr_percentiles)
    truth = take_slice(data.truth, axis, ref.index)
    panels = [Panel(f'input ({info.source})', take_slice(data.source, axis, ref.index), (in_map.low, in_map.high))]
    for r in results:
        path, which = prediction_file(r, ref.subject, ref.plane)
        volume = canonical_volume(path)[0] if path else None
        if volume is None or volume.shape != data.truth.shape:
            panels.append(Panel(f'{r.label}\n(no prediction)', None, (low, high)))
            continue
        pred = take_slice(volume, axis, ref.index)
        value = psnr(np.clip(pred, low, high), np.clip(truth, low, high), high - low)
        note = ' (fused)' if which != ref.plane else ''
        panels.append(Panel(f'{r.label}\nPSNR {value:.2f} dB{note}', pred, (low, high), np.abs(pred - truth), value))
    panels.append(Panel(f'ground truth ({info.target})', truth, (low, high)))
    return panels, take_slice(data.mask.astype(np.float32), axis, ref.index) > 0


def roi_box(error: np.ndarray, fraction: int = ROI_FRACTION) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the 1/fraction x 1/fraction box with the largest summed ``error`` (H, W)."""
    h, w = error.shape
    bh, bw = max(1, min(h, max(4, h // fraction))), max(1, min(w, max(4, w // fraction)))
    integral = np.pad(np.cumsum(np.cumsum(error, 0), 1), ((1, 0), (1, 0)))
    sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left), bh, bw


def draw_strip(ref: SliceRef, panels: list[Panel], body: np.ndarray, spacing: tuple[float, float], unit: str,
               path: str) -> float:
    """Write the strip figure: row 1 the full slices with the region of interest boxed in yellow, row 2 that
    region enlarged, row 3 |prediction - truth| of every result on one colour scale from 0 to the returned
    maximum (in ``unit``). The region is where the results' mean error inside the body is largest.

    spacing: (row, column) pixel size in mm, so slices keep their physical aspect ratio.
    """
    errors = [p.error for p in panels if p.error is not None]
    vmax = max([float(np.percentile(e, ERROR_PERCENTILE)) for e in errors] + [1e-6])
    weight = body if body.any() else np.ones_like(body)
    top, left, bh, bw = roi_box(np.mean(errors, 0) * weight if errors else weight.astype(np.float64))
    aspect = spacing[0] / spacing[1]
    h, w = body.shape
    ratios = [h * aspect / w, bh * aspect / bw, h * aspect / w]
    fig = Figure(figsize=(TILE_INCHES * len(panels) + 1.2, TILE_INCHES * sum(ratios) + 1.4), layout='constrained')
    axes = fig.subplots(3, len(panels), squeeze=False, gridspec_kw={'height_ratios': ratios})
    error_image = None
    for k, panel in enumerate(panels):
        full, zoom, err = axes[0][k], axes[1][k], axes[2][k]
        for ax in (full, zoom, err):
            ax.set_xticks([])
            ax.set_yticks([])
        full.set_title(panel.title, fontsize=9)
        if panel.image is None:
            for ax in (full, zoom, err):
                ax.set_axis_off()
            continue
        shown = dict(cmap='gray', vmin=panel.window[0], vmax=panel.window[1], aspect=aspect, interpolation='nearest')
        full.imshow(panel.image, **shown)
        full.add_patch(Rectangle((left - 0.5, top - 0.5), bw, bh, edgecolor='yellow', fill=False, linewidth=1.2))
        zoom.imshow(panel.image[top:top + bh, left:left + bw], **shown)
        if panel.error is None:
            err.set_axis_off()
            continue
        error_image = err.imshow(panel.error, cmap='inferno', vmin=0, vmax=vmax, aspect=aspect,
                                 interpolation='nearest')
        err.set_title(f'|error| {panel.title.splitlines()[0]}', fontsize=8)
    if error_image is not None:
        fig.colorbar(error_image, ax=list(axes[2]), shrink=0.8, label=f'|error| ({unit})')
    fig.suptitle(f'{ref.name} ({PLANE_NAMES[ref.plane]}): {ref.reason}', fontsize=10)
    fig.savefig(path, dpi=100)
    return vmax
