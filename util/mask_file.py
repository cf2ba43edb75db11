"""A mask file read against the image it belongs to: the body masks of the slice store (data/slice_store.py), of
predict's inputs (inference/inputs.py) and of scoring outside predictions (evaluation/external.py)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from util.geometry import Geometry
from util.image_io import read_image


def read_mask_on_grid(path: str, geometry: Geometry, tol: float, off_grid: Callable[[str], str]) -> np.ndarray:
    """The mask file ``path`` as a bool array (voxels > 0) in the file's voxel order (X, Y, Z), once it is known to
    lie on its image's voxel grid ``geometry`` (same shape, affines within ``tol`` mm). Off the grid: ValueError
    with ``off_grid(why)``, the caller's message naming both files."""
    data, img = read_image(path)
    why = geometry.mismatch(Geometry.of(img), tol)
    if why:
        raise ValueError(off_grid(why))
    return data > 0
