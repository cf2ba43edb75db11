"""2.5D context (``--context_slices K``): a slice and its K neighbours on each side along the slicing axis as
2K+1 channels, the volume's edges replicated; used by the triplanar dataset and by predict alike."""
from __future__ import annotations

import numpy as np

from util.slicing import take_slice


def context_indices(index: int, k: int, n: int) -> np.ndarray:
    """Slice indices i-K..i+K along an axis of ``n`` slices, the volume's edges replicated."""
    return np.clip(np.arange(index - k, index + k + 1), 0, n - 1)


def context_stack(volume: np.ndarray, axis: int, index: int, k: int) -> np.ndarray:
    """(2K+1, h, w): slices i-K..i+K of a canonical (X, Y, Z) ``volume`` along ``axis`` (edges replicated), shown
    as :func:`util.slicing.take_slice` shows them; channel K is slice i."""
    return np.stack([take_slice(volume, axis, int(j)) for j in context_indices(index, k, volume.shape[axis])])


def check_context(k: int, volumes: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """ValueError naming the file when --context_slices ``k`` is negative or larger than a volume's thinnest axis
    (``volumes``: name -> (file, canonical shape))."""
    if k < 0:
        raise ValueError(f'--context_slices {k}: must be 0 or more')
    for name, (path, shape) in volumes.items():
        if k > min(shape[:3]):
            raise ValueError(f'--context_slices {k} is larger than the thinnest axis of {path} (shape '
                             f'{tuple(shape[:3])}, {min(shape[:3])} slices): use at most {min(shape[:3])}')
