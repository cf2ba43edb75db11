"""2D slices of canonical volumes at the training size and back.

A slice is shown with the higher remaining axis (superior, or anterior for axial slices) at the top and the lower
remaining axis running left to right, so slices look anatomical in the result pages. Voxel spacing is kept with
every slice: ``--preprocess pad`` keeps the physical aspect ratio of anisotropic slices (e.g. 1x2.5 mm); putting
slices back cuts the padding off exactly and resamples with antialiasing, so the error of a prediction is never
amplified.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from util.geometry import contiguous

PLANES = {'x': 0, 'y': 1, 'z': 2}
PLANE_NAMES = {'x': 'sagittal', 'y': 'coronal', 'z': 'axial'}
RESIZE_MODES = ('resize', 'pad')


def plane_axis(plane: str) -> int:
    if plane not in PLANES:
        raise ValueError(f'unknown plane "{plane}"; planes are x (sagittal), y (coronal), z (axial)')
    return PLANES[plane]


def in_plane_axes(axis: int) -> tuple[int, int]:
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
    u, v = in_plane_axes(axis)
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
