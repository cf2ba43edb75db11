"""The QA page of one predicted patient, and the batch's ``predict_summary.csv``: what a physicist checks before a
synthetic CT is used for planning.

The page (``<output stem>_qa/index.html``, dominate, next to the outputs) shows first the checks (each value, the
level above which it should be looked at, and OK or CHECK), then the sagittal, coronal and axial mid-planes of the
MR, the synthetic CT in a soft-tissue and a bone window, and the disagreement map side by side (orientation letters
on every image), a HU histogram inside the body, and where everything came from (input file and its sha256, output,
DICOM identity, checkpoint and SAM file with their sha256).

Checks, all inside the body mask the prediction used: body coverage (share of the field of view, and share of the
field of view's side faces inside the body: a body cut by the field of view gets a wrong dose), share of body voxels
clipped at the low and high ends of the HU window, air (below AIR_HU) inside the body, and the 50th/95th/99th
percentiles of the disagreement (std of the plane predictions, HU).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np
from dominate import tags
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from util.drawing import colorize, mid_slice_image
from inference.export.dicom_series import WINDOWS
from util.checkpoint import atomic_write
from util.geometry import Geometry
from util.html import HTML, image_url
from util.intensity import MR_PERCENTILES
from util.slicing import PLANE_NAMES

AIR_HU = -400.0                         # below this inside the body: air (bowel gas, sinuses, a wrong prediction)
# the soft-tissue and bone display windows of the CT series (dicom_series.WINDOWS) as (low, high) HU
SOFT_TISSUE, BONE = ((center - width / 2, center + width / 2) for center, width, _ in WINDOWS)
DISAGREEMENT_MAX = 200.0                # HU at the top of the disagreement colour scale
IMAGE_HEIGHT = 200                      # pixels of each mid-plane image
# check -> level above which it is flagged (share of voxels, or HU)
LEVELS = {'edge_share': 0.01, 'low_share': 0.005, 'high_share': 0.005, 'air_share': 0.02, 'disagreement_p95': 100.0}
# canonical axis -> (left, right, top, bottom) letters of take_slice's display
ORIENTATION = {0: ('P', 'A', 'S', 'I'), 1: ('L', 'R', 'S', 'I'), 2: ('L', 'R', 'A', 'P')}
SUMMARY_NAME = 'predict_summary.csv'


@dataclass(frozen=True)
class QAChecks:
    """The figures of the checks (shares in [0, 1], HU, cm^3)."""
    body_share: float
    body_cm3: float
    edge_share: float
    low_share: float
    high_share: float
    air_share: float
    air_cm3: float
    disagreement_p50: float | None
    disagreement_p95: float | None
    disagreement_p99: float | None

    def flagged(self, key: str) -> bool:
        value = getattr(self, key)
        return value is not None and value > LEVELS[key]

    def flagged_keys(self) -> list[str]:
        """The checks above their level."""
        return [k for k in LEVELS if self.flagged(k)]


def qa_checks(sct: np.ndarray, mask: np.ndarray, disagreement: np.ndarray | None, window: tuple[float, float],
              voxel_mm3: float) -> QAChecks:
    """The checks of a synthetic CT ``sct`` (HU, clipped to ``window``) with body ``mask`` and ``disagreement``
    (HU, or None), all canonical (X, Y, Z) arrays."""
    body = sct[mask]
    n = max(body.size, 1)
    faces = np.concatenate([mask[[0, -1]].ravel(), mask[:, [0, -1]].ravel()])    # L/R and P/A sides of the view
    low, high = window
    spread = (np.percentile(disagreement[mask], [50, 95, 99]) if disagreement is not None and mask.any()
              else [None] * 3)
    return QAChecks(float(mask.mean()), body.size * voxel_mm3 / 1000, float(faces.mean()),
                    float(np.count_nonzero(body <= low + 0.5) / n), float(np.count_nonzero(body >= high - 0.5) / n),
                    float(np.count_nonzero(body < AIR_HU) / n), np.count_nonzero(body < AIR_HU) * voxel_mm3 / 1000,
                    *(None if v is None else float(v) for v in spread))


def _window(low: float, high: float):
    """The map of [low, high] onto [-1, 1] (clipped), for mid_slice_image."""
    return lambda image: (np.clip((image - low) / (high - low), 0, 1) * 2 - 1).astype(np.float32)


def _labelled(image: np.ndarray, axis: int) -> Image.Image:
    """An RGB image with the patient-orientation letters at its edges."""
    rgb = Image.fromarray(image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2))
    draw = ImageDraw.Draw(rgb)
    font = ImageFont.load_default(size=14)
    w, h = rgb.size
    left, right, top, bottom = ORIENTATION[axis]
    for text, xy, anchor in ((left, (3, h // 2), 'lm'), (right, (w - 3, h // 2), 'rm'), (top, (w // 2, 2), 'mt'),
                             (bottom, (w // 2, h - 2), 'mb')):
        draw.text(xy, text, fill=(255, 255, 0), font=font, anchor=anchor, stroke_width=1, stroke_fill=(0, 0, 0))
    return rgb


def _outlined(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """RGB ``image`` with the outline of the boolean region ``inside`` drawn in cyan."""
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[inside & ~ndimage.binary_erosion(inside, border_value=0)] = (0, 220, 255)
    return rgb


def _histogram_png(body: np.ndarray, window: tuple[float, float]) -> bytes:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.17)
    counts, edges = np.histogram(body, bins=np.arange(window[0], window[1] + 20, 20))
    ax.stairs(counts, edges, fill=True, color='#4477aa')
    ax.set_yscale('log')
    for x, text, side in ((window[0], ' window low', 'left'), (AIR_HU, f' air < {AIR_HU:g}', 'left'),
                          (window[1], 'window high ', 'right')):
        ax.axvline(x, color='#cc3311', linestyle='--', linewidth=1)
        ax.text(x, 0.97, text, transform=ax.get_xaxis_transform(), fontsize=8, va='top', ha=side, color='#cc3311')
    ax.set_xlabel('HU (20 HU bins)')
    ax.set_ylabel('body voxels (log)')
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    plt.close(fig)
    return buffer.getvalue()


def _percent(value: float) -> str:
    return f'{value * 100:.2f} %'


def write_qa_page(folder: str, name: str, mr: np.ndarray, sct: np.ndarray, disagreement: np.ndarray | None,
                  mask: np.ndarray, reference, window: tuple[float, float], provenance: list[tuple[str, str]],
                  mr_percentiles: tuple[float, float] = MR_PERCENTILES, source: str = 'MR') -> tuple[str, QAChecks]:
    """Write ``<folder>/index.html`` and its images for patient ``name``: ``mr`` (source units), ``sct`` (HU),
    ``disagreement`` (HU or None) and the body ``mask``, all in the file voxel order of ``reference``;
    ``provenance``: (what, value) rows (input, sha256, output, checkpoint ...). Returns (page path, checks)."""
    geometry = Geometry.of(reference)
    mr_c, sct_c, mask_c = (geometry.to_canonical(v) for v in (mr, sct, mask.astype(bool)))
    dis_c = geometry.to_canonical(disagreement) if disagreement is not None else None
    checks = qa_checks(sct_c, mask_c, dis_c, window, float(np.prod(geometry.zooms)))
    page = HTML(folder, f'QA: synthetic CT of {name}')
    page.add_header(f'Synthetic CT of {name}: checks before planning', top=True)
    disagreement_text = ('-' if checks.disagreement_p50 is None else
                         f'{checks.disagreement_p50:.1f} / {checks.disagreement_p95:.1f} / '
                         f'{checks.disagreement_p99:.1f} HU')
    rows = [('body coverage', f'{_percent(checks.body_share)} of the field of view, {checks.body_cm3:.1f} cm3', '',
             None),
            ('body at the side edges of the field of view (cut off?)', _percent(checks.edge_share),
             _percent(LEVELS['edge_share']), 'edge_share'),
            (f'body voxels clipped at the window low ({window[0]:g} HU)', _percent(checks.low_share),
             _percent(LEVELS['low_share']), 'low_share'),
            (f'body voxels clipped at the window high ({window[1]:g} HU)', _percent(checks.high_share),
             _percent(LEVELS['high_share']), 'high_share'),
            (f'air inside the body (below {AIR_HU:g} HU)', f'{_percent(checks.air_share)}, {checks.air_cm3:.1f} cm3',
             _percent(LEVELS['air_share']), 'air_share'),
            ('disagreement of the planes inside the body, 50th / 95th / 99th percentile', disagreement_text,
             f'95th: {LEVELS["disagreement_p95"]:g} HU', 'disagreement_p95')]
    table = tags.table(border=1, style='border-collapse: collapse')
    with table:
        with tags.tr():
            for head in ('check', 'value', 'look closer above', 'status'):
                tags.th(head, style='padding: 3px 8px; text-align: left')
        for label, value, level, key in rows:
            status = '' if key is None or getattr(checks, key) is None else ('CHECK' if checks.flagged(key) else 'OK')
            with tags.tr():
                tags.td(label, style='padding: 3px 8px')
                tags.td(value, style='padding: 3px 8px; text-align: right')
                tags.td(level, style='padding: 3px 8px; text-align: right')
                tags.td(status, style='padding: 3px 8px; font-weight: bold; color: '
                        + ('#cc3311' if status == 'CHECK' else '#117733'))
    page.summary.add(table)
    page.add_text('Levels are prompts to look, not pass/fail criteria; the body is the mask the prediction used.',
                  top=True)

    low, high = np.percentile(mr_c[mask_c], mr_percentiles) if mask_c.any() else (mr_c.min(), mr_c.max())
    if high <= low:                       # a flat body: show the whole range
        low, high = float(mr_c.min()), float(max(mr_c.max(), mr_c.min() + 1))
    # (what it shows, title, canonical volume, map of its values onto [-1, 1])
    columns = [('source', f'{source} (body {mr_percentiles[0]:g}-{mr_percentiles[1]:g}th percentile), body mask in '
                f'cyan', mr_c, _window(low, high)),
               ('soft_tissue', f'synthetic CT, soft tissue (W{SOFT_TISSUE[1] - SOFT_TISSUE[0]:g} '
                f'L{sum(SOFT_TISSUE) / 2:g})', sct_c, _window(*SOFT_TISSUE)),
               ('bone', f'synthetic CT, bone (W{BONE[1] - BONE[0]:g} L{sum(BONE) / 2:g})', sct_c, _window(*BONE))]
    if dis_c is not None:
        columns.append(('disagreement', f'disagreement (std of planes), black 0 to yellow {DISAGREEMENT_MAX:g} HU',
                        dis_c, _window(0.0, DISAGREEMENT_MAX)))
    page.add_header('Mid-planes at their physical aspect ratio; letters: the patient\'s Left/Right, '
                    'Anterior/Posterior, Superior/Inferior (axial and coronal: the patient\'s left on the image\'s '
                    'left, not the radiological convention)')
    grid = tags.table(border=1, style='border-collapse: collapse; text-align: center')
    with grid:
        with tags.tr():
            tags.th('')
            for _, title, _, _ in columns:
                tags.th(title, style='padding: 3px 6px; max-width: 320px')
        for axis in (2, 1, 0):
            with tags.tr():
                tags.th(PLANE_NAMES['xyz'[axis]], style='padding: 3px 6px')
                for c, (shows, title, volume, window_map) in enumerate(columns):
                    image = mid_slice_image(volume, geometry.zooms, axis, IMAGE_HEIGHT, window_map)
                    if shows == 'disagreement':
                        image = colorize(image)
                    if shows == 'source':
                        image = _outlined(image, mid_slice_image(mask_c.astype(np.float32) * 2 - 1, geometry.zooms,
                                                                 axis, IMAGE_HEIGHT) > 127)
                    file_name = f'{"xyz"[axis]}_{c}.png'
                    _labelled(image, axis).save(os.path.join(page.get_image_dir(), file_name))
                    with tags.td(style='padding: 2px'):
                        tags.img(src=image_url(file_name), alt=f'{PLANE_NAMES["xyz"[axis]]}: {title}')
    page.content.add(grid)
    page.add_header('HU inside the body')
    with open(os.path.join(page.get_image_dir(), 'histogram.png'), 'wb') as f:
        f.write(_histogram_png(sct_c[mask_c], window))
    page.add_images(['histogram.png'], [f'synthetic CT HU in the body mask ({mask_c.sum()} voxels)'],
                    ['histogram.png'], width=700)
    page.add_header('Where it comes from')
    page.add_table(['what', 'value'], [list(row) for row in provenance], align='left')
    return page.save(), checks


def update_summary(folder: str, row: dict) -> str:
    """Add (or replace, by ``name``) the row of one patient in ``<folder>/predict_summary.csv`` (atomically);
    returns its path."""
    path = os.path.join(folder, SUMMARY_NAME)
    rows = []
    if os.path.isfile(path):
        with open(path, newline='', encoding='utf-8') as f:
            rows = [r for r in csv.DictReader(f) if r.get('name') != row['name']]
    rows.append({k: '' if v is None else v for k, v in row.items()})
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=fields, restval='')
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(write, path, binary=False)
    return path


def summary_row(name: str, checks: QAChecks, extra: dict) -> dict:
    """One ``predict_summary.csv`` row: ``name``, ``extra`` (input, sha256, output, page ...) and the checks."""
    figures = {k: (None if v is None else round(v, 6)) for k, v in checks.__dict__.items()}
    return {'name': name, **extra, **figures, 'flags': ' '.join(checks.flagged_keys())}
