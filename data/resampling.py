"""Volumes on another voxel grid (``--target_spacing``, mm): the grid's shape and the resampling onto it.

Arrays are canonical (RAS) and channel-first, (C, X, Y, Z). Resampling is MONAI's ``Resize``: trilinear for images,
Gaussian-smoothed first along the axes it shrinks (antialiasing, so a coarser grid does not alias), and a mask is
resampled as an image and thresholded at 0.5. A grid of the volume's own shape is returned unchanged (bit for bit).
"""
from __future__ import annotations

import numpy as np
import torch

from util.parser_flags import three_values


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """``--target_spacing``: '' -> None (the native grid), '1.5' -> (1.5, 1.5, 1.5), '1,1,2.5' or '1x1x2.5' ->
    (1.0, 1.0, 2.5) mm along x, y, z; ValueError for anything else."""
    if not text:
        return None
    values = three_values(text, float)
    if values is None or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f'--target_spacing {text}: give one positive spacing in mm or three (x,y,z), e.g. 1 or '
                         f'1,1,2.5')
    return values


def resampled_shape(shape: tuple[int, int, int], zooms: tuple[float, float, float],
                    spacing: tuple[float, float, float] | None) -> tuple[int, int, int]:
    """The shape of a volume of ``shape`` voxels of ``zooms`` mm on a grid of ``spacing`` mm (same extent, rounded,
    at least 1); ``shape`` itself when ``spacing`` is None."""
    if spacing is None:
        return tuple(int(n) for n in shape)
    return tuple(max(1, int(round(n * z / s))) for n, z, s in zip(shape, zooms, spacing))


def resample(volume: torch.Tensor, shape: tuple[int, int, int], mode: str = 'trilinear') -> torch.Tensor:
    """``volume`` (C, X, Y, Z) float on a grid of ``shape`` voxels covering the same extent. ``mode``
    'trilinear' (images, antialiased where it shrinks) or 'nearest' (a 0/1 mask: resampled as an image, then
    > 0.5). The volume itself when it already has ``shape``."""
    shape = tuple(int(n) for n in shape)
    if tuple(volume.shape[1:]) == shape:
        return volume
    from monai.transforms import Resize
    out = Resize(shape, mode='trilinear', anti_aliasing=True)(volume.float())
    out = out.as_tensor() if hasattr(out, 'as_tensor') else torch.as_tensor(out)
    if mode == 'nearest':
        return (out > 0.5).to(volume.dtype)
    if mode != 'trilinear':
        raise ValueError(f'resample: mode {mode!r} is not trilinear or nearest')
    return out.to(volume.dtype)
