"""Synthesize the small paired head datasets the toolkit runs on out of the box (CPU-sized, deterministic); the
command line is scripts/make_demo_data.py, and triplanar_aligned makes the demo set on first use without
--dataroot.

``make_synthrad`` writes ``<root>/<subject>/{mr,ct,mask}.nii.gz`` (SynthRAD2023 Task 1 layout: MR-like T1 volume,
CT in HU as int16, body mask), ``make_brats`` ``<root>/<subject>/<subject>_{flair,t2,seg}.nii[.gz]`` (BraTS
layout, skull-stripped, one subject uncompressed). Heads are built from tissue classes (air, skin, fat, skull, CSF, grey
and white matter, sinus air, an optional lesion) with a per-subject size, pose and smooth deformation, then
rendered per modality with partial-volume blur, texture, an MR bias field and noise. Bone and air are both dark in
MR, as in real scans, so MR -> CT is not a lookup table. Half the subjects are stored in LPS orientation and half
with anisotropic voxels, so reorientation and spacing are exercised.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy import ndimage

AIR, SKIN, FAT, SKULL, CSF, GREY, WHITE, SINUS, LESION = range(9)
# mean value per tissue class, indexed by the labels above
CT_HU = np.array([-1000, 40, -100, 1200, 10, 40, 28, -950, 20], np.float32)
MR_T1 = np.array([0, 0.55, 0.92, 0.05, 0.15, 0.45, 0.65, 0.0, 0.30], np.float32)
MR_T2 = np.array([0, 0, 0, 0, 1.00, 0.55, 0.38, 0, 0.82], np.float32)
MR_FLAIR = np.array([0, 0, 0, 0, 0.10, 0.52, 0.38, 0, 0.95], np.float32)
BRAIN = (CSF, GREY, WHITE, LESION)

SHAPE = (48, 56, 40)                      # voxels, canonical RAS order
SPACING_ISO = (4.0, 4.0, 4.0)             # mm
SPACING_ANISO = (4.0, 4.0, 5.0)           # mm, thicker axial slices: fewer of them
BRATS_MODALITIES = ('flair', 't2')


def head_labels(shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator,
                lesion: bool) -> np.ndarray:
    """Tissue labels (uint8, canonical RAS) of a random head: layered ellipsoid shells with a smooth random
    deformation, folded cortex, two ventricles, a frontal sinus with a bony wall and optionally a lesion."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing='ij')
    z = z + 12.0 + rng.normal(0, 3)                      # head centre above the volume centre: neck cut off
    angle = np.deg2rad(rng.normal(0, 5))                 # pose: small rotation in the axial plane
    x, y = np.cos(angle) * x - np.sin(angle) * y + rng.normal(0, 2), np.sin(angle) * x + np.cos(angle) * y
    for c in (x, y, z):                                  # smooth deformation, a few mm
        k = rng.normal(0, 1 / 60, 3)
        c += rng.uniform(2, 4) * np.sin(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi))
    radii = np.array([70.0, 86.0, 80.0]) * (1 + rng.normal(0, 0.04, 3))
    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    depth = (1 - r) * radii.mean()                       # ~ mm below the skin
    folds = 2.0 * np.sin(x / 6 + rng.uniform(0, 6)) * np.sin(y / 7) * np.sin(z / 6 + rng.uniform(0, 6))
    labels = np.full(shape, AIR, np.uint8)
    for label, start in ((SKIN, 0.0), (FAT, 3.0), (SKULL, 6.0), (CSF, 13.0), (GREY, 15.5)):
        labels[depth > start] = label
    labels[depth > 20.0 + folds] = WHITE

    def ellipsoid(centre, half_axes) -> np.ndarray:
        return sum(((c - m) / h) ** 2 for c, m, h in zip((x, y, z), centre, half_axes)) <= 1

    for side in (-1, 1):
        labels[ellipsoid((side * 7, 5, 14), (4, 16, 7))] = CSF
    sinus_centre, sinus_axes = (0, 0.78 * radii[1], -0.3 * radii[2]), np.array([14.0, 9.0, 11.0])
    labels[ellipsoid(sinus_centre, sinus_axes + 4) & (labels != AIR)] = SKULL
    labels[ellipsoid(sinus_centre, sinus_axes)] = SINUS
    if lesion:
        inner = np.argwhere(labels == WHITE)
        voxel = tuple(inner[rng.integers(len(inner))])
        centre = [c[voxel] for c in (x, y, z)]
        labels[ellipsoid(centre, [rng.uniform(6, 10)] * 3) & np.isin(labels, BRAIN)] = LESION
    return labels


def render(labels: np.ndarray, values: np.ndarray, rng: np.random.Generator, noise: float,
           texture: float, bias: float) -> np.ndarray:
    """Per-class values with partial-volume blur, smooth tissue texture, a multiplicative bias field and
    additive Gaussian noise (float32)."""
    img = ndimage.gaussian_filter(values[labels], 0.6)
    img = img * (1 + texture * ndimage.gaussian_filter(rng.normal(size=labels.shape), 1.5) * 3)
    if bias:
        field = ndimage.zoom(rng.normal(size=(3, 3, 3)), np.array(labels.shape) / 3, order=3)[
            tuple(slice(0, n) for n in labels.shape)]
        img = img * np.exp(bias * field)
    return (img + rng.normal(0, noise, labels.shape)).astype(np.float32)


def orient_as(data: np.ndarray, spacing: tuple[float, float, float], axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The canonical (RAS) array ``data`` (voxel size ``spacing`` mm, centred on the origin) as stored in
    ``axcodes`` orientation: the reordered array and its affine, so every voxel keeps its world position."""
    ras_affine = np.diag([*spacing, 1.0])
    ras_affine[:3, 3] = -(np.array(data.shape) - 1) / 2 * np.array(spacing)
    tr = ornt_transform(axcodes2ornt(('R', 'A', 'S')), axcodes2ornt(tuple(axcodes)))
    return np.ascontiguousarray(apply_orientation(data, tr)), ras_affine @ inv_ornt_aff(tr, data.shape)


def _save(data: np.ndarray, affine: np.ndarray, path: str, dtype) -> None:
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def _subject_geometry(i: int, base: tuple[int, int, int] | None = None,
                      spacings: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
                      ) -> tuple[tuple[int, int, int], tuple[float, float, float], str]:
    """Shape, spacing and stored orientation of subject ``i``: alternately RAS/LPS, every 2nd pair with the second
    spacing of ``spacings`` (``base`` is the shape at the first; the axial count follows the spacing). None: the
    module's SHAPE and (SPACING_ISO, SPACING_ANISO), read at call time."""
    base = base or SHAPE
    iso, aniso = spacings or (SPACING_ISO, SPACING_ANISO)
    spacing = aniso if (i // 2) % 2 else iso
    shape = (base[0], base[1], round(base[2] * iso[2] / spacing[2]))
    return shape, spacing, ('LPS' if i % 2 else 'RAS')


def make_synthrad(root: str, n: int, seed: int, shape: tuple[int, int, int] | None = None,
                  spacings: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None) -> None:
    """``n`` subjects ``demo001``... in the SynthRAD2023 Task 1 layout under ``root``; ``shape`` (voxels at the
    first spacing) and the two ``spacings`` (mm) default to the demo set's."""
    base = shape
    for i in range(n):
        rng = np.random.default_rng([seed, 1, i])
        shape, spacing, axcodes = _subject_geometry(i, base, spacings)
        labels = head_labels(shape, spacing, rng, lesion=bool(i % 3 == 0))
        ct = np.clip(render(labels, CT_HU, rng, noise=20.0, texture=0.02, bias=0.0), -1024, 3071)
        mr = np.abs(render(labels, MR_T1 * 1000, rng, noise=15.0, texture=0.03, bias=0.12))
        mask = ndimage.binary_dilation(labels != AIR, iterations=1)
        out = os.path.join(root, f'demo{i + 1:03d}')
        os.makedirs(out, exist_ok=True)
        for name, vol, dtype in (('mr', mr, np.float32), ('ct', np.round(ct), np.int16), ('mask', mask, np.uint8)):
            data, affine = orient_as(vol, spacing, axcodes)
            _save(data, affine, os.path.join(out, f'{name}.nii.gz'), dtype)


def make_brats(root: str, n: int, seed: int) -> None:
    """``n`` skull-stripped subjects ``DemoBraTS_00i`` in the BraTS layout (FLAIR, T2, tumour seg) under
    ``root``; the last one as uncompressed ``.nii``."""
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i])
        name = f'DemoBraTS_{i:03d}'
        labels = head_labels(SHAPE, SPACING_ISO, rng, lesion=True)
        brain = np.isin(labels, BRAIN)
        ext = '.nii' if i == n - 1 else '.nii.gz'
        out = os.path.join(root, name)
        os.makedirs(out, exist_ok=True)
        volumes = {m: np.clip(render(labels, v * 1000, rng, noise=10.0, texture=0.03, bias=0.08), 0, None) * brain
                   for m, v in zip(BRATS_MODALITIES, (MR_FLAIR, MR_T2))}
        volumes['seg'] = np.where(labels == LESION, 2, 0)
        for mod, vol in volumes.items():
            data, affine = orient_as(vol, SPACING_ISO, 'LPS')
            _save(data, affine, os.path.join(out, f'{name}_{mod}{ext}'), np.uint8 if mod == 'seg' else np.int16)


MAKERS = {'synthrad': make_synthrad, 'brats': make_brats}
DEFAULT_SIZES = {'synthrad': 8, 'brats': 4}


def ensure_demo_dataset(path: str, kind: str = 'synthrad', seed: int = 2024) -> str:
    """Make the ``kind`` demo dataset at ``path`` unless it is there; built in a temporary folder and renamed,
    so concurrent processes never see half of it. Returns ``path``."""
    if os.path.isdir(path) and any(not e.startswith('.') for e in os.listdir(path)):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.demo-', dir=parent)
    try:
        MAKERS[kind](tmp, DEFAULT_SIZES[kind], seed)
        try:
            os.replace(tmp, path)
        except OSError:
            if not os.path.isdir(path):  # not made meanwhile by another process
                raise
        print(f'made the demo dataset {path} ({DEFAULT_SIZES[kind]} subjects)', flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
