"""Training-time augmentation of the triplanar dataset (``--augment``): one random flip and small affine transform
applied alike to every channel of a slice stack (source, target, body mask, 2.5D context)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, flip: bool, max_degrees: float = 10.0, max_scale: float = 0.1,
            max_shift: float = 0.05) -> torch.Tensor:
    """Random horizontal flip (if ``flip``) and small rotation/scale/shift of a (C, H, W) stack in [-1, 1]
    (areas moved in are -1). ``max_shift`` is a fraction of the image size."""
    if flip and torch.rand(()) < 0.5:
        x = x.flip(-1)
    r = torch.rand(4) * 2 - 1
    angle, scale = math.radians(float(r[0]) * max_degrees), 1 + float(r[1]) * max_scale
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, float(r[2]) * 2 * max_shift], [sin, cos, float(r[3]) * 2 * max_shift]])
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None] + 1, grid, mode='bilinear', padding_mode='zeros', align_corners=False)[0] - 1
