"""The dose grid: the CT's volume sampled every ``grid_mm`` along each of its voxel axes, from its first voxel."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class DoseGrid:
    """A grid of ``shape`` voxels, ``spacing_mm`` apart, along the CT file's voxel axes; dose voxel ``j`` lies at
    CT voxel coordinate ``j * step`` (``step`` = grid mm / CT voxel mm per axis), so ``affine`` (RAS, voxel -> mm)
    is the CT's with its columns scaled by ``step``."""
    ct_shape: tuple[int, int, int]
    step: tuple[float, float, float]
    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def of(cls, ct_affine: np.ndarray, ct_shape: tuple[int, ...], grid_mm: float) -> 'DoseGrid':
        """The ``grid_mm`` grid over a CT of ``ct_shape`` voxels with RAS affine ``ct_affine``."""
        ct_affine = np.asarray(ct_affine, np.float64)
        voxel = np.sqrt((ct_affine[:3, :3] ** 2).sum(axis=0))
        step = grid_mm / voxel
        shape = tuple(int(np.floor((n - 1) / s + 1e-9)) + 1 for n, s in zip(ct_shape[:3], step))
        return cls(tuple(int(n) for n in ct_shape[:3]), tuple(float(s) for s in step), shape,
                   ct_affine @ np.diag([*step, 1.0]))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def sample(self, volume: np.ndarray) -> np.ndarray:
        """A CT-grid volume (float, e.g. HU) on the dose grid, float32: averaged over a box of about the dose
        voxel's size (an odd number of CT voxels, so it stays centred) along each axis where the dose grid is
        coarser, so that a thin bone between two dose voxel centres is not skipped; then trilinear at the dose
        voxel centres."""
        v = np.asarray(volume, np.float32)
        if v.shape != self.ct_shape:
            raise ValueError(f'volume of shape {v.shape} is not on the CT grid {self.ct_shape}')
        for axis, s in enumerate(self.step):
            width = 2 * int(s // 2) + 1
            if width > 1:
                v = ndimage.uniform_filter1d(v, width, axis=axis, mode='nearest')
        coords = np.meshgrid(*[np.arange(n) * s for n, s in zip(self.shape, self.step)], indexing='ij')
        return ndimage.map_coordinates(v, coords, order=1, mode='nearest').astype(np.float32)

    def sample_mask(self, mask: np.ndarray) -> np.ndarray:
        """A CT-grid mask on the dose grid: dose voxels at least half inside (:meth:`sample` >= 0.5), bool."""
        return self.sample(np.asarray(mask, np.float32)) >= 0.5
