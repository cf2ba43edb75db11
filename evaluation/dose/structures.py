"""The volumes a plan is made for, on the CT's voxel grid: the body, the target (the subject's ``target`` mask, else
an automatic sphere deep inside the body) and the organs at risk (``oar_*`` masks)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from data.layouts import MASK_NAME, find_modality
from evaluation.dose.errors import DoseError
from evaluation.dose.settings import DoseSettings
from util.body_mask import body_mask
from util.geometry import Geometry
from util.image_io import IMAGE_EXTENSIONS, image_extension, image_stem
from util.mask_file import read_mask_on_grid

TARGET_NAME = 'target'
OAR_PREFIX = 'oar_'
GRID_TOL_MM = 1e-3          # a mask's affine may differ from the CT's by this much (as scripts/evaluate.py's default)
SKIN_MARGIN_MM = 10.0       # the automatic target's edge lies at least this deep under the body's outline
MIN_INSIDE = 0.5            # a target file with less than this share of its voxels inside the body is refused
AUTOMATIC = 'automatic'


@dataclass
class Structures:
    """Masks on the CT's voxel grid, bool arrays (X, Y, Z) in the CT file's voxel order. ``target_source``: the
    target file's path or ``'automatic'``; ``oars``: {name: mask}, the name being the file's stem without
    ``oar_`` (``oar_brainstem.nii.gz`` -> ``brainstem``)."""
    body: np.ndarray
    target: np.ndarray
    target_source: str
    oars: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self) -> dict:
        """Where the target came from, its size and the organs at risk (JSON-able)."""
        return {'target': self.target_source, 'target_voxels': int(self.target.sum()),
                'body_voxels': int(self.body.sum()), 'oars': sorted(self.oars)}

    def digest(self) -> str:
        """sha256 of every mask (part of a plan's cache key)."""
        h = hashlib.sha256()
        for name, mask in [('body', self.body), ('target', self.target), *sorted(self.oars.items())]:
            h.update(name.encode() + str(mask.shape).encode() + np.packbits(mask.astype(bool)).tobytes())
        return h.hexdigest()


def automatic_target(body: np.ndarray, spacing_mm: tuple[float, float, float], radius_mm: float,
                     label: str = 'the body') -> np.ndarray:
    """A ball of ``radius_mm`` (voxel centres within it; bool, ``body``'s shape) around the body's deepest point:
    the voxel farthest from every voxel outside ``body`` (the volume's border counts as outside), in mm along the
    array's axes with voxel sizes ``spacing_mm``. Ties (a box has a line of deepest points) go to the one nearest
    the body's centroid, then to the first in C order: the same ball for the same body, every run. DoseError
    naming ``label`` when that point is less than ``radius_mm`` + 10 mm deep."""
    body = np.asarray(body, bool)
    if not body.any():
        raise DoseError(f'{label}: the body mask is empty, there is nowhere to put a target')
    depth = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing_mm)[1:-1, 1:-1, 1:-1]
    deepest = float(depth.max())
    if deepest < radius_mm + SKIN_MARGIN_MM:
        raise DoseError(f'{label}: the body is too small for an automatic target of radius {radius_mm:g} mm (its '
                        f'deepest point is {deepest:.1f} mm under the outline, {radius_mm + SKIN_MARGIN_MM:g} mm '
                        f'needed): give a smaller --dose_target_radius or a target mask file')
    spacing = np.asarray(spacing_mm, np.float64)
    candidates = np.argwhere(depth >= deepest - 1e-6)          # C order
    centroid = np.argwhere(body).mean(axis=0)
    off = np.linalg.norm((candidates - centroid) * spacing, axis=1)
    centre = candidates[int(np.argmin(np.round(off, 6)))]
    grids = np.ogrid[tuple(slice(0, n) for n in body.shape)]
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing))
    return (dist2 <= radius_mm ** 2) & body


def subject_structures(subject_dir: str | None, subject: str, ct_path: str, ct_hu: np.ndarray, ct_img,
                       settings: DoseSettings) -> Structures:
    """The structures of ``subject`` on the grid of its CT (``ct_hu``, ``ct_img`` = util.image_io.read_image of
    ``ct_path``): the body from the subject's ``mask`` file when ``subject_dir`` has one, else computed from the CT
    (util.body_mask); the target from its ``target`` file (any layout and format data/layouts.py knows), else
    :func:`automatic_target` of ``settings.target_radius_mm``; organs at risk from its ``oar_*`` files. DoseError
    for a mask off the CT's grid, an empty target or one mostly outside the body."""
    geometry = Geometry.of(ct_img)

    def read(path: str, what: str) -> np.ndarray:
        try:
            return read_mask_on_grid(path, geometry, GRID_TOL_MM,
                                     lambda why: f'{what} {path} is not on the voxel grid of the CT {ct_path}: '
                                                 f'{" ".join(why.split())}')
        except ValueError as e:         # off the grid, or unreadable: the line names the file
            raise DoseError(str(e)) from None

    mask_path = find_modality(subject_dir, subject, MASK_NAME) if subject_dir else None
    if mask_path:
        body = read(mask_path, 'the body mask')
    else:
        body = geometry.from_canonical(body_mask([(geometry.to_canonical(ct_hu), 'ct')], label=ct_path))
    target_path = find_modality(subject_dir, subject, TARGET_NAME) if subject_dir else None
    if target_path:
        target = read(target_path, 'the target')
        n = int(target.sum())
        if n == 0:
            raise DoseError(f'{target_path}: the target mask is empty')
        if (target & body).sum() < MIN_INSIDE * n:
            raise DoseError(f'{target_path}: the target lies outside the body ({int((target & body).sum())} of '
                            f'its {n} voxels inside {mask_path or "the body computed from " + ct_path})')
        target &= body
    else:
        spacing = tuple(float(s) for s in np.sqrt((geometry.affine[:3, :3] ** 2).sum(axis=0)))
        target = automatic_target(body, spacing, settings.target_radius_mm, label=ct_path)
    oars = {image_stem(p)[len(OAR_PREFIX):]: read(p, 'the organ at risk') & body for p in oar_files(subject_dir)}
    return Structures(body=body, target=target, target_source=target_path or AUTOMATIC, oars=oars)


def oar_files(subject_dir: str | None) -> list[str]:
    """The ``oar_<name>.<ext>`` image files of a subject folder, sorted (none without a folder)."""
    if not subject_dir or not os.path.isdir(subject_dir):
        return []
    return sorted(os.path.join(subject_dir, f) for f in os.listdir(subject_dir)
                  if f.startswith(OAR_PREFIX) and image_extension(f) in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(subject_dir, f)))
