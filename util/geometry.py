"""Where a volume lives: its affine (voxel -> mm) and shape, and the axis permutation/flips to canonical RAS.

A volume is sliced in its closest canonical orientation RAS, so plane ``x`` (axis 0) is sagittal, ``y`` (axis 1)
coronal and ``z`` (axis 2) axial for every file.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

RAS = axcodes2ornt(('R', 'A', 'S'))


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
