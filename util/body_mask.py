"""Body masks of canonical (RAS) volumes when no mask file is given, and masks grown in-plane.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

CT_BODY_HU = -500.0                  # CT voxels above this are tissue when no mask file is given
MR_BODY_FRACTION = 0.1               # MR voxels this far up from the minimum to the 99th percentile are tissue
BODY_GAP_VOXELS = 2                  # tissue parts this close (x2) are one body (see body_mask)


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


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(N, 1, H, W) 0/1 mask grown by ``pixels`` in every direction (a (2p+1)^2 square max filter), float."""
    if pixels <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels)
