"""Drawing volumes for pages: mid-slices as uint8 images at their physical aspect ratio, colour maps."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from util.slicing import slice_spacing, take_slice


def mid_slice_image(volume: np.ndarray, zooms: tuple[float, float, float], axis: int,
                    height: int, to_unit=None) -> np.ndarray:
    """uint8 (height, W) image of the mid-slice along canonical ``axis`` of a volume in [-1, 1] (or mapped there
    by ``to_unit(slice)``), shown as util.slicing.take_slice does, at its physical aspect ratio."""
    image = take_slice(volume, axis, volume.shape[axis] // 2).astype(np.float32)
    if to_unit is not None:
        image = to_unit(image)
    row_mm, col_mm = slice_spacing(zooms, axis)
    width = max(1, round(height * image.shape[1] * col_mm / (image.shape[0] * row_mm)))
    t = F.interpolate(torch.from_numpy(image)[None, None], size=(height, width), mode='bilinear',
                      align_corners=False)[0, 0]
    return ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def colorize(image: np.ndarray, cmap: str = 'inferno') -> np.ndarray:
    """uint8 (H, W, 3) RGB of a uint8 (H, W) image through the matplotlib colour map ``cmap`` (0 -> its first
    colour, 255 -> its last)."""
    return (colormaps[cmap](image.astype(np.float32) / 255.0)[..., :3] * 255).astype(np.uint8)
