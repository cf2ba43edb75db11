"""The QA page of one predicted patient, and the batch's ``predict_summary.csv``: what a physicist checks before a
synthetic CT is used for planning.

The page (``<output>_qa/index.html``, dominate, next to the outputs) shows first the checks (each value, when it
should be looked at, and OK or CHECK), then the sagittal, coronal and axial mid-planes of the MR, the synthetic CT in
a soft-tissue and a bone window, and the disagreement map side by side (orientation letters on every image), a HU
histogram inside the body, and where everything came from (input file and its sha256, output, DICOM identity,
checkpoint and SAM file with their sha256). The folder is written as a whole (util.whole_folder): a full disk leaves
no half page, and the error names the file.

Checks, against the body mask the prediction used (the MR's): body coverage (share of the field of view, and share
of the field of view's side faces inside the body: a body cut by the field of view gets a wrong dose); inside the
body, the share clipped at the low and high ends of the HU window, air (below AIR_HU), the share in the soft-tissue
range, the median HU and the share of bone (above BONE_HU); outside it, tissue (above AIR_HU, which a planning
system's external contour takes for patient); the overlap (Dice) of the synthetic CT's own body outline with the
mask; and the 50th/95th/99th percentiles of the disagreement (std of the plane predictions, HU). The levels come
from the demo heads' real CTs (docs/new_patients.md): a synthetic CT as good as the CT passes them all; one of
+1000 HU everywhere (a badly trained model) fails five.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from dominate import tags
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from util.body_mask import CT_BODY_HU, body_mask
from util.drawing import colorize, mid_slice_image
from inference.export.dicom_series import WINDOWS
from util.checkpoint import atomic_write
from util.disk import writing
from util.geometry import Geometry
from util.html import HTML, IMAGE_DIR, image_url
from util.intensity import MR_PERCENTILES
from util.slicing import PLANE_NAMES
from util.whole_folder import whole_folder

AIR_HU = -400.0                         # below this inside the body: air; above it outside: tissue
BONE_HU = 300.0                         # above this: bone
# the soft-tissue and bone display windows of the CT series (dicom_series.WINDOWS) as (low, high) HU; the first
# is also the soft-tissue range of the checks (fat to muscle and brain)
SOFT_TISSUE, BONE = ((center - width / 2, center + width / 2) for center, width, _ in WINDOWS)
DISAGREEMENT_MAX = 200.0                # HU at the top of the disagreement colour scale
IMAGE_HEIGHT = 200                      # pixels of each mid-plane image
# check -> (low, high): flagged below low or above high (None: no bound). Shares of voxels, HU, or a Dice. The
# demo heads' real CTs (scripts/make_demo_data.py, 8 heads; body mask from the file or computed from the MR) give:
# tissue outside 0, outline Dice 0.937-0.950, soft tissue 0.549-0.577, median 39-41 HU, bone 0.238-0.253, air
# inside 0.0001-0.0017; the levels leave room for finer voxels, other anatomy and a fair model.
LEVELS = {'edge_share': (None, 0.01), 'low_share': (None, 0.005), 'high_share': (None, 0.005),
          'air_share': (None, 0.02), 'outside_share': (None, 0.01), 'outline_dice': (0.85, None),
          'soft_share': (0.3, None), 'median_hu': SOFT_TISSUE, 'bone_share': (None, 0.5),
          'disagreement_p95': (None, 100.0)}
# canonical axis -> (left, right, top, bottom) letters of take_slice's display
ORIENTATION = {0: ('P', 'A', 'S', 'I'), 1: ('L', 'R', 'S', 'I'), 2: ('L', 'R', 'A', 'P')}
SUMMARY_NAME = 'predict_summary.csv'


@dataclass(frozen=True)
class QAChecks:
    """The figures of the checks (shares in [0, 1], HU, cm^3, a Dice in [0, 1])."""
    body_share: float
    body_cm3: float
    edge_share: float
    low_share: float
    high_share: float
    air_share: float
    air_cm3: float
    outside_share: float                # of the voxels beyond one voxel around the body
    outside_cm3: float
    outline_dice: float
    soft_share: float
    median_hu: float | None
    bone_share: float
    disagreement_p50: float | None
    disagreement_p95: float | None
    disagreement_p99: float | None

    def flagged(self, key: str) -> bool:
        value = getattr(self, key)
        low, high = LEVELS[key]
        return value is not None and ((low is not None and value < low) or (high is not None and value > high))

    def flagged_keys(self) -> list[str]:
        """The checks outside their levels."""
        return [k for k in LEVELS if self.flagged(k)]


def outline_dice(sct: np.ndarray, mask: np.ndarray) -> float:
    """Dice of the synthetic CT's own body outline (computed as a CT's body mask: above CT_BODY_HU, the largest
    part, holes filled; util.body_mask) with the body ``mask``; 1 when both are empty."""
    with warnings.catch_warnings():       # a nonsense CT's outline may be in pieces: that is what is measured
        warnings.simplefilter('ignore')
        outline = body_mask([(sct, 'ct')])
    total = int(outline.sum()) + int(mask.sum())
    return 2 * np.count_nonzero(outline & mask) / total if total else 1.0


def qa_checks(sct: np.ndarray, mask: np.ndarray, disagreement: np.ndarray | None, window: tuple[float, float],
              voxel_mm3: float) -> QAChecks:
    """The checks of a synthetic CT ``sct`` (HU, clipped to ``window``) with body ``mask`` and ``disagreement``
    (HU, or None), all canonical (X, Y, Z) arrays. The skin's partial-volume edge is neither air inside nor tissue
    outside: air is counted more than one voxel inside the mask (6-connected erosion), tissue more than one voxel
    outside it; shares of the body's voxels, tissue outside as a share of the voxels counted there."""
    body = sct[mask]
    n = max(body.size, 1)
    faces = np.concatenate([mask[[0, -1]].ravel(), mask[:, [0, -1]].ravel()])    # L/R and P/A sides of the view
    low, high = window
    spread = (np.percentile(disagreement[mask], [50, 95, 99]) if disagreement is not None and mask.any()
              else [None] * 3)
    air = int(np.count_nonzero(sct[ndimage.binary_erosion(mask)] < AIR_HU))
    outside = ~ndimage.binary_dilation(mask)
    tissue_outside = int(np.count_nonzero(sct[outside] > AIR_HU))
    return QAChecks(float(mask.mean()), body.size * voxel_mm3 / 1000, float(faces.mean()),
                    float(np.count_nonzero(body <= low + 0.5) / n), float(np.count_nonzero(body >= high - 0.5) / n),
                    air / n, air * voxel_mm3 / 1000,
                    tissue_outside / max(int(np.count_nonzero(outside)), 1), tissue_outside * voxel_mm3 / 1000,
                    float(outline_dice(sct, mask)),
                    float(np.count_nonzero((body >= SOFT_TISSUE[0]) & (body <= SOFT_TISSUE[1])) / n),
                    float(np.median(body)) if body.size else None, float(np.count_nonzero(body > BONE_HU) / n),
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


def _level_text(key: str, show) -> str:
    low, high = LEVELS[key]
    if low is not None and high is not None:
        return f'outside {show(low)} to {show(high)}'
    return f'below {show(low)}' if low is not None else f'above {show(high)}'


def _check_rows(checks: QAChecks, window: tuple[float, float]) -> list[tuple[str, str, str, str | None]]:
    """(check, value, when it is flagged, key) of each row of the checks table."""
    def hu(v: float) -> str:
        return f'{v:g} HU'
    disagreement = ('-' if checks.disagreement_p50 is None else
                    f'{checks.disagreement_p50:.1f} / {checks.disagreement_p95:.1f} / {checks.disagreement_p99:.1f} HU')
    return [
        ('body coverage', f'{_percent(checks.body_share)} of the field of view, {checks.body_cm3:.1f} cm3', '', None),
        ('body at the side edges of the field of view (cut off?)', _percent(checks.edge_share),
         _level_text('edge_share', _percent), 'edge_share'),
        (f'body voxels clipped at the window low ({window[0]:g} HU)', _percent(checks.low_share),
         _level_text('low_share', _percent), 'low_share'),
        (f'body voxels clipped at the window high ({window[1]:g} HU)', _percent(checks.high_share),
         _level_text('high_share', _percent), 'high_share'),
        (f'air inside the body (below {AIR_HU:g} HU, more than one voxel inside the body mask)',
         f'{_percent(checks.air_share)}, {checks.air_cm3:.1f} cm3',
         _level_text('air_share', _percent), 'air_share'),
        (f'tissue outside the body (above {AIR_HU:g} HU, more than one voxel outside the body mask: a planning '
         f'system takes it for patient), share of the outside', f'{_percent(checks.outside_share)}, '
         f'{checks.outside_cm3:.1f} cm3', _level_text('outside_share', _percent), 'outside_share'),
        (f'body outline of the synthetic CT (above {CT_BODY_HU:g} HU) against the body mask, Dice',
         f'{checks.outline_dice:.3f}', _level_text('outline_dice', lambda v: f'{v:g}'), 'outline_dice'),
        (f'body voxels in the soft-tissue range ({SOFT_TISSUE[0]:g} to {SOFT_TISSUE[1]:g} HU)',
         _percent(checks.soft_share), _level_text('soft_share', _percent), 'soft_share'),
        ('median HU in the body', '-' if checks.median_hu is None else hu(round(checks.median_hu, 1)),
         _level_text('median_hu', hu), 'median_hu'),
        (f'bone in the body (above {BONE_HU:g} HU)', _percent(checks.bone_share), _level_text('bone_share', _percent),
         'bone_share'),
        ('disagreement of the planes inside the body, 50th / 95th / 99th percentile', disagreement,
         _level_text('disagreement_p95', hu) + ' (95th)', 'disagreement_p95')]


def write_qa_page(folder: str, name: str, mr: np.ndarray, sct: np.ndarray, disagreement: np.ndarray | None,
                  mask: np.ndarray, reference, window: tuple[float, float], provenance: list[tuple[str, str]],
                  mr_percentiles: tuple[float, float] = MR_PERCENTILES, source: str = 'MR') -> tuple[str, QAChecks]:
    """Write ``<folder>/index.html`` and its images for patient ``name``: ``mr`` (source units), ``sct`` (HU),
    ``disagreement`` (HU or None) and the body ``mask``, all in the file voxel order of ``reference``;
    ``provenance``: (what, value) rows (input, sha256, output, checkpoint ...). The folder appears whole (an existing
    one replaced) or not at all: a full disk is a util.disk.WriteError naming the file. Returns (page, checks)."""
    geometry = Geometry.of(reference)
    mr_c, sct_c, mask_c = (geometry.to_canonical(v) for v in (mr, sct, mask.astype(bool)))
    dis_c = geometry.to_canonical(disagreement) if disagreement is not None else None
    checks = qa_checks(sct_c, mask_c, dis_c, window, float(np.prod(geometry.zooms)))
    with whole_folder(folder) as tmp:
        page = HTML(tmp, f'QA: synthetic CT of {name}')

        def save(file_name: str, write) -> None:
            """Write image ``file_name`` through ``write(path)``, a full disk named by its final path."""
            with writing(os.path.join(folder, IMAGE_DIR, file_name)):
                write(os.path.join(page.get_image_dir(), file_name))

        page.add_header(f'Synthetic CT of {name}: checks before planning', top=True)
        table = tags.table(border=1, style='border-collapse: collapse')
        with table:
            with tags.tr():
                for head in ('check', 'value', 'look closer when', 'status'):
                    tags.th(head, style='padding: 3px 8px; text-align: left')
            for label, value, level, key in _check_rows(checks, window):
                status = '' if key is None or getattr(checks, key) is None else \
                    ('CHECK' if checks.flagged(key) else 'OK')
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
        columns = [('source', f'{source} (body {mr_percentiles[0]:g}-{mr_percentiles[1]:g}th percentile), body mask '
                    f'in cyan', mr_c, _window(low, high)),
                   ('soft_tissue', f'synthetic CT, soft tissue (W{SOFT_TISSUE[1] - SOFT_TISSUE[0]:g} '
                    f'L{sum(SOFT_TISSUE) / 2:g}), body mask in cyan', sct_c, _window(*SOFT_TISSUE)),
                   ('bone', f'synthetic CT, bone (W{BONE[1] - BONE[0]:g} L{sum(BONE) / 2:g})', sct_c, _window(*BONE))]
        if dis_c is not None:
            columns.append(('disagreement', f'disagreement (std of planes), black 0 to yellow {DISAGREEMENT_MAX:g} '
                            f'HU', dis_c, _window(0.0, DISAGREEMENT_MAX)))
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
                inside = mid_slice_image(mask_c.astype(np.float32) * 2 - 1, geometry.zooms, axis, IMAGE_HEIGHT) > 127
                with tags.tr():
                    tags.th(PLANE_NAMES['xyz'[axis]], style='padding: 3px 6px')
                    for c, (shows, title, volume, window_map) in enumerate(columns):
                        image = mid_slice_image(volume, geometry.zooms, axis, IMAGE_HEIGHT, window_map)
                        if shows == 'disagreement':
                            image = colorize(image)
                        if shows in ('source', 'soft_tissue'):
                            image = _outlined(image, inside)
                        file_name = f'{"xyz"[axis]}_{c}.png'
                        save(file_name, _labelled(image, axis).save)
                        with tags.td(style='padding: 2px'):
                            tags.img(src=image_url(file_name), alt=f'{PLANE_NAMES["xyz"[axis]]}: {title}')
        page.content.add(grid)
        page.add_header('HU inside the body')
        histogram = _histogram_png(sct_c[mask_c], window)

        def write_bytes(path: str) -> None:
            with open(path, 'wb') as f:
                f.write(histogram)
        save('histogram.png', write_bytes)
        page.add_images(['histogram.png'], [f'synthetic CT HU in the body mask ({mask_c.sum()} voxels)'],
                        ['histogram.png'], width=700)
        page.add_header('Where it comes from')
        page.add_table(['what', 'value'], [list(row) for row in provenance], align='left')
        index = os.path.join(folder, 'index.html')
        with writing(index), open(os.path.join(tmp, 'index.html'), 'w', encoding='utf-8') as f:
            f.write(page.doc.render())
    return index, checks


def update_summary(folder: str, row: dict) -> str:
    """Add the row of one output in ``<folder>/predict_summary.csv`` (atomically), replacing the row of the same
    ``output`` (a patient predicted again; the same patient in another format gets a row of its own); returns its
    path."""
    path = os.path.join(folder, SUMMARY_NAME)
    rows = []
    if os.path.isfile(path):
        output = os.path.abspath(row['output'])
        with open(path, newline='', encoding='utf-8') as f:
            rows = [r for r in csv.DictReader(f) if os.path.abspath(r.get('output') or '.') != output]
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
