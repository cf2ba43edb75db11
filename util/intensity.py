"""Intensities to [-1, 1] and back: CT through a fixed Hounsfield window, MR by body percentiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The SynthRAD2023 evaluation clips CT to this range (HU); its width 4024 is the PSNR/SSIM data range.
SYNTHRAD_HU_RANGE = (-1024.0, 3000.0)
CT_WINDOW = SYNTHRAD_HU_RANGE        # HU mapped to [-1, 1] for CT
MR_PERCENTILES = (0.5, 99.5)         # body percentiles mapped to [-1, 1] for MR


def modality_kind(name: str) -> str:
    """'ct' for the modality named ``ct`` (Hounsfield units, fixed window), 'mr' for every other name."""
    return 'ct' if name.lower() == 'ct' else 'mr'


@dataclass(frozen=True)
class IntensityMap:
    """Linear map of the window [low, high] in source units (HU for CT) onto [-1, 1]; values outside the
    window are clipped. y = 2 (x - low) / (high - low) - 1 and back x = (y + 1) (high - low) / 2 + low."""
    low: float
    high: float

    def normalise(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, np.float32) - self.low) * (2.0 / (self.high - self.low)) - 1.0
        return np.clip(y, -1.0, 1.0).astype(np.float32)

    def denormalise(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float32) + 1.0) * ((self.high - self.low) / 2.0) + self.low).astype(np.float32)


def intensity_map(kind: str, data: np.ndarray, mask: np.ndarray, path: str,
                  ct_window: tuple[float, float] = CT_WINDOW,
                  mr_percentiles: tuple[float, float] = MR_PERCENTILES) -> IntensityMap:
    """The map of one volume: CT -> the fixed HU ``ct_window``; MR -> its ``mr_percentiles`` inside ``mask``."""
    if kind == 'ct':
        low, high = ct_window
    else:
        inside = data[mask]
        if inside.size == 0:
            raise ValueError(f'{path}: the body mask is empty, cannot normalise the MR intensities')
        low, high = (float(v) for v in np.percentile(inside, mr_percentiles))
    if not high > low:
        raise ValueError(f'{path}: intensity window [{low:g}, {high:g}] is empty (constant volume?)')
    return IntensityMap(float(low), float(high))
