"""3D volumes for the triplanar data path: NIfTI reading with checks, canonical (RAS) orientation and back,
intensity normalisation to [-1, 1] and back, body masks, 2D slices at the training size and reassembly.

Conventions. A volume is sliced in its closest canonical orientation RAS, so plane ``x`` (axis 0) is sagittal,
``y`` (axis 1) coronal and ``z`` (axis 2) axial for every file. A slice is shown with the higher remaining axis
(superior, or anterior for axial slices) at the top and the lower remaining axis running left to right, so
slices look anatomical in the result pages. Voxel spacing is kept with every slice: ``--preprocess pad`` keeps the
physical aspect ratio of anisotropic slices (e.g. 1x2.5 mm); putting slices back cuts the padding off exactly and
resamples with antialiasing, so the error of a prediction is never amplified.
"""
from __future__ import annotations

import gzip
import os
import warnings
import zlib
from dataclasses import dataclass
from functools import cached_property

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

from util.metrics import SYNTHRAD_HU_RANGE

PLANES = {'x': 0, 'y': 1, 'z': 2}
PLANE_NAMES = {'x': 'sagittal', 'y': 'coronal', 'z': 'axial'}
RAS = axcodes2ornt(('R', 'A', 'S'))
CT_WINDOW = SYNTHRAD_HU_RANGE        # HU mapped to [-1, 1] for CT
MR_PERCENTILES = (0.5, 99.5)         # body percentiles mapped to [-1, 1] for MR
CT_BODY_HU = -500.0                  # CT voxels above this are tissue when no mask file is given
MR_BODY_FRACTION = 0.1               # MR voxels this far up from the minimum to the 99th percentile are tissue
RESIZE_MODES = ('resize', 'pad')
BODY_GAP_VOXELS = 2                  # tissue parts this close (x2) are one body (see body_mask)


# ----------------------------------------------------------------------------- reading and writing

def load_nifti(path: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a 3D NIfTI file (``.nii`` or ``.nii.gz``): float32 data (X, Y, Z) as stored, and the image.

    Trailing axes of length 1 are dropped. Raises FileNotFoundError for a missing file and ValueError naming the
    file for anything else: not NIfTI, truncated or corrupt, not 3D, NaN or Inf voxels.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: file not found')
    try:
        img = nib.load(path)
    except (ImageFileError, gzip.BadGzipFile) as e:
        raise ValueError(f'{path}: not a NIfTI file ({e})') from None
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f'{path}: cannot be read as NIfTI, truncated or corrupt ({e})') from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f'{path}: not a NIfTI file (read as {type(img).__name__})')
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ValueError(f'{path}: expected a 3D volume, got shape {tuple(img.shape)} ({len(img.shape)}D)')
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f'{path}: truncated or corrupt image data ({e})') from None
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f'{path}: {bad} voxels are NaN or Inf')
    return data, img


def save_nifti(data: np.ndarray, reference: nib.Nifti1Image, path: str) -> None:
    """Write ``data`` (source orientation, the reference's shape) as float32 NIfTI with the reference's affine,
    qform/sform codes and units, so the volume lands exactly where the reference was."""
    if tuple(data.shape) != tuple(reference.shape[:3]):
        raise ValueError(f'{path}: data shape {data.shape} differs from the reference shape {reference.shape[:3]}')
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(type(reference)(np.asarray(data, np.float32), reference.affine, header=header), path)


# ----------------------------------------------------------------------------- geometry

def contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous array with no negative stride (a copy only when needed). np.ascontiguousarray alone
    keeps a flipped axis of length 1 (a one-slice volume) as a negative stride, which torch.from_numpy refuses."""
    a = np.ascontiguousarray(a)
    return a if all(st >= 0 for st in a.strides) else a.copy()


@dataclass(frozen=True)
class Geometry:
    """Where a volume lives: the source ``affine`` (4x4, voxel -> mm) and array ``shape``, and the axis
    permutation/flips (nibabel orientation ``ornt``) that take the array to canonical RAS and back."""
    affine: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, img: nib.Nifti1Image) -> 'Geometry':
        return cls(np.asarray(img.affine, np.float64), tuple(int(s) for s in img.shape[:3]))

    @cached_property
    def ornt(self) -> np.ndarray:
        return io_orientation(self.affine)

    @cached_property
    def canonical_shape(self) -> tuple[int, int, int]:
        out = [0, 0, 0]
        for src, (dst, _) in enumerate(self.ornt):
            out[int(dst)] = self.shape[src]
        return tuple(out)

    @cached_property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical axes (x, y, z)."""
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        out = [0.0, 0.0, 0.0]
        for src, (dst, _) in enumerate(self.ornt):
            out[int(dst)] = float(sizes[src])
        return tuple(out)

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """Source-ordered (X, Y, Z) array -> canonical RAS array (exact: axis permutation and flips only)."""
        return contiguous(apply_orientation(data, ornt_transform(self.ornt, RAS)))

    def from_canonical(self, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`."""
        return contiguous(apply_orientation(data, ornt_transform(RAS, self.ornt)))

    def mismatch(self, other: 'Geometry', tol: float) -> str | None:
        """Why two volumes do not share a voxel grid (shape, or affine entries differing by more than ``tol``
        mm), or None when they do."""
        if self.shape != other.shape:
            return f'shapes differ: {self.shape} vs {other.shape}'
        diff = float(np.abs(self.affine - other.affine).max())
        if diff > tol:
            return f'affines differ by up to {diff:.4g} mm (tolerance {tol:g}):\n{self.affine}\nvs\n{other.affine}'
        return None

    def to_json(self) -> dict:
        return {'affine': self.affine.tolist(), 'shape': list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> 'Geometry':
        return cls(np.asarray(d['affine'], np.float64), tuple(d['shape']))


# ----------------------------------------------------------------------------- intensities

def modality_kind(name: str) -> str:
    """'ct' for the modality named ``ct`` (Hounsfield units, fixed window), 'mr' for every other name."""
    return 'ct' if name.lower() == 'ct' else 'mr'


@dataclass(frozen=True)
class IntensityMap:
    """Linear map of the window [low, high] in source units (HU for CT) onto [-1, 1]; values outside the
    window are clipped. y = 2 (x - low) / (high - low) - 1 and back x = (y + 1) (high - low) / 2 + low."""
    low: float
    high: float

    def normalise(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, np.float32) - self.low) * (2.0 / (self.high - self.low)) - 1.0
        return np.clip(y, -1.0, 1.0).astype(np.float32)

    def denormalise(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float32) + 1.0) * ((self.high - self.low) / 2.0) + self.low).astype(np.float32)


def intensity_map(kind: str, data: np.ndarray, mask: np.ndarray, path: str,
                  ct_window: tuple[float, float] = CT_WINDOW,
                  mr_percentiles: tuple[float, float] = MR_PERCENTILES) -> IntensityMap:
    """The map of one volume: CT -> the fixed HU ``ct_window``; MR -> its ``mr_percentiles`` inside ``mask``."""
    if kind == 'ct':
        low, high = ct_window
    else:
        inside = data[mask]
        if inside.size == 0:
            raise ValueError(f'{path}: the body mask is empty, cannot normalise the MR intensities')
        low, high = (float(v) for v in np.percentile(inside, mr_percentiles))
    if not high > low:
        raise ValueError(f'{path}: intensity window [{low:g}, {high:g}] is empty (constant volume?)')
    return IntensityMap(float(low), float(high))


def foreground(data: np.ndarray, kind: str) -> np.ndarray:
    """Tissue voxels of one volume: CT above -500 HU; MR above min + 0.1 (p99 - min) (above the noise of the
    air, below every tissue but bone, whose holes :func:`body_mask` fills)."""
    if kind == 'ct':
        return data > CT_BODY_HU
    low, high = np.percentile(data, [0, 99])
    return data > low + MR_BODY_FRACTION * (high - low)


def body_mask(volumes: list[tuple[np.ndarray, str]], label: str = 'volume') -> np.ndarray:
    """Body mask of co-registered canonical (RAS) volumes [(data, kind)], used when no mask file is given: the
    union of their foregrounds, its largest connected part, holes filled in 3D and in every axial slice (the
    neck is open at the bottom of a head scan, so 3D filling alone leaves the skull's inside out).

    Parts of the foreground at most ``2 * BODY_GAP_VOXELS`` voxels apart count as one part: a thin volume (a few
    voxels across, e.g. 1000x4x4) is cut into pieces by every dark layer (bone, air) that spans its whole
    cross-section, and the largest piece alone would be a small share of the body. When the kept part is still
    less than half of the tissue voxels a warning names ``label`` (slices outside the mask are not translated).
    """
    fg = np.zeros(volumes[0][0].shape, bool)
    for data, kind in volumes:
        fg |= foreground(data, kind)
    labels, n = ndimage.label(ndimage.binary_dilation(fg, iterations=BODY_GAP_VOXELS))
    tissue = int(fg.sum())
    if n > 1:
        sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
        fg &= labels == (int(np.argmax(sizes)) + 1)
        kept = int(fg.sum())
        if kept < tissue / 2:
            warnings.warn(f'{label}: the computed body mask keeps {kept} of its {tissue} tissue voxels (the largest '
                          f'of {n} separate parts); slices outside it are not translated: pass a mask file if the '
                          f'body is larger', UserWarning, stacklevel=2)
    fg = ndimage.binary_fill_holes(fg)
    for k in range(fg.shape[2]):
        fg[:, :, k] = ndimage.binary_fill_holes(fg[:, :, k])
    return fg


# ----------------------------------------------------------------------------- slices

def plane_axis(plane: str) -> int:
    if plane not in PLANES:
        raise ValueError(f'unknown plane "{plane}"; planes are x (sagittal), y (coronal), z (axial)')
    return PLANES[plane]


def _in_plane_axes(axis: int) -> tuple[int, int]:
    """(u, v): the two axes left in a slice, u shown left to right, v bottom to top."""
    u, v = (a for a in range(3) if a != axis)
    return u, v


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along canonical ``axis`` of a (X, Y, Z) or (X, Y, Z, C) array, shown anatomically:
    a copy (H, W) or (C, H, W) in the volume's dtype, rows = v (top: high v), columns = u."""
    sl = [slice(None)] * 3
    sl[axis] = index
    s = np.moveaxis(volume[tuple(sl)], (0, 1), (-1, -2))
    return contiguous(s[..., ::-1, :])


def put_slice(volume: np.ndarray, axis: int, index: int, image: np.ndarray) -> None:
    """Inverse of :func:`take_slice`: write a displayed slice (rows=v, cols=u) back into ``volume``."""
    sl = [slice(None)] * 3
    sl[axis] = index
    volume[tuple(sl)] = np.asarray(image)[::-1].T


def slice_spacing(zooms: tuple[float, float, float], axis: int) -> tuple[float, float]:
    """(row, column) pixel size in mm of a slice along ``axis``."""
    u, v = _in_plane_axes(axis)
    return zooms[v], zooms[u]


def fitted_size(hw: tuple[int, int], spacing: tuple[float, float], size: int, mode: str) -> tuple[int, int]:
    """Size (h, w) of a slice inside the ``size`` x ``size`` image: the whole square for 'resize' (the paper's
    stretch), the largest box with the slice's physical aspect ratio for 'pad'."""
    if mode == 'resize':
        return size, size
    if mode != 'pad':
        raise ValueError(f'unknown slice mode "{mode}"; use one of {RESIZE_MODES}')
    extent_h, extent_w = hw[0] * spacing[0], hw[1] * spacing[1]
    scale = size / max(extent_h, extent_w)
    return max(1, min(size, round(extent_h * scale))), max(1, min(size, round(extent_w * scale)))


def _offsets(inner: tuple[int, int], size: int) -> tuple[int, int]:
    return (size - inner[0]) // 2, (size - inner[1]) // 2


def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (C, h, w) to ``hw`` (align_corners=False, as the paper's resizing)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    # channels as a batch of one-channel images: about twice as fast on CPU as one multi-channel image
    return F.interpolate(x[:, None], size=tuple(hw), mode='bilinear', align_corners=False)[:, 0]


def to_square(x: torch.Tensor, spacing: tuple[float, float], size: int, mode: str,
              fill: float = -1.0) -> torch.Tensor:
    """(C, h, w) slice -> (C, size, size): bilinear resize ('resize'), or resize to the physical aspect ratio
    and centre in a square filled with ``fill`` ('pad')."""
    inner = fitted_size(tuple(x.shape[-2:]), spacing, size, mode)
    x = _resize(x, inner)
    if inner == (size, size):
        return x
    top, left = _offsets(inner, size)
    out = x.new_full((x.shape[0], size, size), fill)
    out[:, top:top + inner[0], left:left + inner[1]] = x
    return out


def from_square(x: torch.Tensor, hw: tuple[int, int], spacing: tuple[float, float], mode: str) -> torch.Tensor:
    """Back from :func:`to_square`: (C, size, size) -> (C, h, w) on the slice's voxel grid.

    'pad' first cuts out exactly the box :func:`to_square` filled (an exact inverse when the box has the slice's
    own size). The box is then resampled to (h, w) with antialiased linear interpolation (a triangle filter
    widened by the shrink factor on shrunk axes, plain linear on enlarged ones): every output voxel is a convex
    combination of predicted pixels, so an error in the prediction is never amplified, where an inverse of the
    upsampling (exact only for images that are themselves upsampled) would amplify it up to several times.
    """
    size = x.shape[-1]
    inner = fitted_size(hw, spacing, size, mode)
    top, left = _offsets(inner, size)
    x = x[:, top:top + inner[0], left:left + inner[1]].float()
    if tuple(inner) == tuple(hw):
        return x
    return F.interpolate(x[:, None], size=tuple(hw), mode='bilinear', align_corners=False, antialias=True)[:, 0]


# ----------------------------------------------------------------------------- reassembly

def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(N, 1, H, W) 0/1 mask grown by ``pixels`` in every direction (a (2p+1)^2 square max filter), float."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels)


def disagreement_map(planes: list[np.ndarray], spreads: list[np.ndarray], scale: float) -> np.ndarray | None:
    """Voxel-wise standard deviation (target units) of a prediction: the spread of the per-plane volumes
    ``planes`` (target units, already clipped to the target's window) plus the mean over planes of the TTA /
    ensemble variance, ``spreads`` being per-plane volumes of that standard deviation in [-1, 1] units and
    ``scale`` (high - low) / 2 of the target window: sqrt(var_planes + mean_planes((spread * scale)^2)).
    None when there is nothing to disagree (one plane, no spread)."""
    if len(planes) < 2 and not spreads:
        return None
    variance = np.stack(planes).var(axis=0)
    if spreads:
        variance = variance + np.mean([(v * scale) ** 2 for v in spreads], axis=0)
    return np.sqrt(variance).astype(np.float32)


class VolumeAssembler:
    """Puts predicted slices (size x size, [-1, 1]) of one subject back into canonical volumes, one per plane.

    Slices never added (e.g. skipped by --min_foreground) keep ``fill`` (-1: air, -1024 HU for CT).
    """

    def __init__(self, shape: tuple[int, int, int], zooms: tuple[float, float, float], mode: str,
                 fill: float = -1.0):
        self.shape, self.zooms, self.mode, self.fill = tuple(shape), tuple(zooms), mode, fill
        self.volumes: dict[str, np.ndarray] = {}
        self.filled: dict[str, set[int]] = {}

    def add(self, plane: str, index: int, image: torch.Tensor | np.ndarray) -> None:
        """``image``: (size, size) or (C, size, size); channels are averaged."""
        axis = plane_axis(plane)
        t = torch.as_tensor(np.asarray(image, np.float32))
        t = t.reshape(-1, *t.shape[-2:]).mean(0, keepdim=True)
        u, v = _in_plane_axes(axis)
        hw = (self.shape[v], self.shape[u])
        out = from_square(t, hw, slice_spacing(self.zooms, axis), self.mode)[0].numpy()
        if plane not in self.volumes:
            self.volumes[plane] = np.full(self.shape, self.fill, np.float32)
            self.filled[plane] = set()
        put_slice(self.volumes[plane], axis, index, out)
        self.filled[plane].add(int(index))

    @property
    def planes(self) -> list[str]:
        return [p for p in PLANES if p in self.volumes]

    @property
    def n_slices(self) -> int:
        """Distinct slices added so far (a slice added twice counts once)."""
        return sum(len(s) for s in self.filled.values())

    def fused(self, method: str = 'mean') -> np.ndarray:
        """Voxel-wise mean or median of the plane volumes present."""
        if not self.volumes:
            raise ValueError('no slices were added, nothing to fuse')
        stack = np.stack([self.volumes[p] for p in self.planes])
        if method == 'mean':
            return stack.mean(0)
        if method == 'median':
            return np.median(stack, axis=0).astype(np.float32)
        raise ValueError(f'unknown fusion "{method}"; use mean or median')

    def disagreement(self, target: 'IntensityMap', spread: 'VolumeAssembler | None' = None) -> np.ndarray | None:
        """:func:`disagreement_map` of these plane volumes ([-1, 1], mapped to target units by ``target`` and
        clipped to its window) and of the TTA / ensemble ``spread`` assembled beside them (canonical order)."""
        return disagreement_map([np.clip(target.denormalise(self.volumes[p]), target.low, target.high)
                                 for p in self.planes],
                                list(spread.volumes.values()) if spread is not None else [],
                                (target.high - target.low) / 2)
