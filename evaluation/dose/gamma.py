"""The gamma index of a synthetic CT's dose against the CT's (pymedphys's implementation, which the medical-physics
community maintains; it needs numba): 2 % global (of the CT dose's maximum) / 2 mm, points below 10 % of that
maximum left out, as SynthRAD2025 reports it.

    pip install pymedphys==0.41.0 numba==0.68.1       # the gamma only: no GUI or cloud extras
"""
from __future__ import annotations

import math
import warnings

import numpy as np

DOSE_PERCENT = 2.0          # global: of the CT dose's maximum
DISTANCE_MM = 2.0
CUTOFF_PERCENT = 10.0       # reference points below this % of the maximum are not evaluated
MAX_GAMMA = 2.0             # the search stops here: the map reads 0 .. 2 (a pass is <= 1)
INSTALL = 'pip install pymedphys==0.41.0 numba==0.68.1'


# what the gamma columns mean, recorded next to the scores
RECORD = {'gamma': f'{DOSE_PERCENT:g} % global (of the CT dose maximum) / {DISTANCE_MM:g} mm, points below '
                   f'{CUTOFF_PERCENT:g} % of the maximum left out (pymedphys.gamma)'}


def gamma_map(dose_ct: np.ndarray, dose_sct: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Gamma of every voxel of ``dose_sct`` against the reference ``dose_ct`` (same grid, voxel sizes
    ``spacing_mm``), capped at 2; NaN where the CT dose is below the cutoff. RuntimeError saying how to install
    pymedphys when it is missing."""
    require_pymedphys()
    from pymedphys import gamma
    axes = tuple(np.arange(n) * s for n, s in zip(dose_ct.shape, spacing_mm))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return gamma(axes, np.asarray(dose_ct, np.float64), axes, np.asarray(dose_sct, np.float64),
                     DOSE_PERCENT, DISTANCE_MM, lower_percent_dose_cutoff=CUTOFF_PERCENT,
                     max_gamma=MAX_GAMMA)


def require_pymedphys() -> None:
    """RuntimeError saying how to install them when pymedphys or numba cannot be imported."""
    try:
        import numba  # noqa: F401
        import pymedphys  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f'the gamma index needs pymedphys and numba ({exc}): {INSTALL}') from None


def pass_rate(gamma: np.ndarray) -> float:
    """The percentage of the evaluated (finite) points with gamma <= 1; NaN when none was evaluated."""
    evaluated = gamma[np.isfinite(gamma)]
    return float(100 * np.mean(evaluated <= 1)) if evaluated.size else math.nan
