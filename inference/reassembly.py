"""Predicted slices back into volumes: one volume per plane, fused voxel-wise, the disagreement map, and a volume
written back at its source geometry.
"""
from __future__ import annotations

import numpy as np
import torch

from inference.export.volume_file import write_image
from data.resampling import resample
from util.geometry import Geometry
from util.intensity import IntensityMap
from util.slicing import PLANES, from_square, in_plane_axes, plane_axis, put_slice, slice_spacing

WHOLE = 'whole'             # the key of a volume predicted whole (3D network) in VolumeAssembler.volumes


def disagreement_map(planes: list[np.ndarray], spreads: list[np.ndarray], scale: float) -> np.ndarray | None:
    """Voxel-wise standard deviation (target units) of a prediction: the spread of the per-plane volumes
    ``planes`` (target units, already clipped to the target's window) plus the mean over planes of the TTA /
    ensemble variance, ``spreads`` being per-plane volumes of that standard deviation in [-1, 1] units and
    ``scale`` (high - low) / 2 of the target window: sqrt(var_planes + mean_planes((spread * scale)^2)).
    None when there is nothing to disagree (one plane, no spread). A volume predicted whole (no planes) has only
    its spread."""
    if len(planes) < 2 and not spreads:
        return None
    variance = np.stack(planes).var(axis=0) if planes else 0.0
    if spreads:
        variance = variance + np.mean([(v * scale) ** 2 for v in spreads], axis=0)
    return np.sqrt(variance).astype(np.float32)


class VolumeAssembler:
    """Puts predicted slices (size x size, [-1, 1]) of one subject back into canonical volumes, one per plane.

    Slices never added (e.g. skipped by --min_foreground) keep ``fill`` (-1: air, the low end of the target's window).
    A volume a 3D network predicted whole (inference/sliding_window.py) is :meth:`put_volume`'s: it is then the
    fused volume, with no plane volumes.
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
        u, v = in_plane_axes(axis)
        hw = (self.shape[v], self.shape[u])
        out = from_square(t, hw, slice_spacing(self.zooms, axis), self.mode)[0].numpy()
        if plane not in self.volumes:
            self.volumes[plane] = np.full(self.shape, self.fill, np.float32)
            self.filled[plane] = set()
        put_slice(self.volumes[plane], axis, index, out)
        self.filled[plane].add(int(index))

    def put_volume(self, volume: torch.Tensor | np.ndarray) -> None:
        """A whole canonical volume (C, X, Y, Z) or (X, Y, Z) in [-1, 1] (or a spread), predicted at once by a 3D
        network: channels averaged, resampled onto this grid when it was predicted on another (--target_spacing;
        data/resampling.py, antialiased)."""
        t = torch.as_tensor(np.asarray(volume, np.float32))
        t = t.reshape(-1, *t.shape[-3:]).mean(0, keepdim=True)
        self.volumes[WHOLE] = np.array(resample(t, self.shape)[0].numpy(), np.float32)

    @property
    def planes(self) -> list[str]:
        return [p for p in PLANES if p in self.volumes]

    @property
    def n_slices(self) -> int:
        """Distinct slices added so far (a slice added twice counts once)."""
        return sum(len(s) for s in self.filled.values())

    def clear_outside(self, keep: np.ndarray) -> None:
        """Voxels outside the canonical bool ``keep`` become ``fill`` in every plane volume (air; no spread):
        inference/body_composite.py."""
        for volume in self.volumes.values():
            volume[~keep] = self.fill

    def fused(self, method: str = 'mean') -> np.ndarray:
        """Voxel-wise mean or median of the plane volumes present."""
        if not self.volumes:
            raise ValueError('no slices were added, nothing to fuse')
        if WHOLE in self.volumes:
            return self.volumes[WHOLE]
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


def save_canonical(volume: np.ndarray, geometry: Geometry, reference, path: str) -> None:
    """Write a canonical (RAS) ``volume`` as float32 NIfTI at ``path`` (its folder made when missing), back in the
    voxel order, affine and header of ``reference``, the source file's image whose ``geometry`` this is; atomically
    (:func:`inference.export.volume_file.write_image`: a full or read-only disk is a util.disk.WriteError naming
    ``path``, and leaves no file under that name)."""
    write_image(geometry.from_canonical(volume), reference, path)
