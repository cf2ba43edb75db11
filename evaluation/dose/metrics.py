"""The dose metrics SynthRAD2025 ranks synthetic CTs by (its organisers' dose_metrics.py), for a dose computed on
the real CT and the same plan recomputed on the synthetic CT, both on one dose grid (Gy):

- dose MAE: mean |D_ct - D_sct| over the voxels where the CT dose is at least 90 % of the prescription, as a
  fraction of the prescription (0.01 = 1 % of the prescription);
- the DVH metric: |dD98| / D98 + |dV95| / V95 of the target, plus, over the (up to) three organs at risk with the
  highest (D5 + Dmean) / 2 on the CT dose, the mean relative difference of D2 and the mean relative difference of
  Dmean (each relative to the CT dose's value). Without organs at risk the OAR terms are left out and said so.

Dx: the dose the hottest x % of a structure receive at least (nearest rank: of n voxels sorted from the hottest,
the ceil(x n / 100)-th); Vx: the percentage of the structure receiving at least x % of the prescription.
The gamma pass rate is evaluation/dose/gamma.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAE_THRESHOLD = 0.9         # of the prescription: the voxels dose MAE is taken over
N_OARS = 3                  # the most exposed organs at risk in the DVH metric


def dose_mae(dose_ct: np.ndarray, dose_sct: np.ndarray, prescription_gy: float) -> float:
    """Mean |dose_ct - dose_sct| / prescription over the voxels with dose_ct >= 90 % of the prescription; NaN
    when no voxel gets that much."""
    high = dose_ct >= MAE_THRESHOLD * prescription_gy
    if not high.any():
        return math.nan
    return float(np.mean(np.abs(dose_ct[high] - dose_sct[high])) / prescription_gy)


def dose_at_volume(dose: np.ndarray, mask: np.ndarray, percent: float) -> float:
    """D<percent> (Gy) of the structure ``mask``: the dose at least ``percent`` % of its voxels receive."""
    values = np.sort(dose[mask].ravel())[::-1]
    if values.size == 0:
        raise ValueError('empty structure')
    rank = max(1, math.ceil(percent / 100 * values.size))
    return float(values[rank - 1])


def volume_at_dose(dose: np.ndarray, mask: np.ndarray, threshold_gy: float) -> float:
    """The percentage of the structure ``mask`` that receives at least ``threshold_gy``."""
    values = dose[mask]
    if values.size == 0:
        raise ValueError('empty structure')
    return float(100 * np.mean(values >= threshold_gy))


def relative_difference(ct: float, sct: float) -> float:
    """|ct - sct| / ct; NaN when the CT's value is 0 (nothing to be relative to)."""
    return abs(ct - sct) / ct if ct > 0 else math.nan


@dataclass
class DvhMetric:
    """The DVH metric and its terms: ``value`` = d98 + v95 + d2 + dmean (the OAR terms 0 when ``oars`` is
    empty); ``oars``: the organs at risk used, most exposed first; ``left_out``: what was not computed and why."""
    value: float
    d98: float
    v95: float
    d2: float = 0.0
    dmean: float = 0.0
    oars: list[str] = field(default_factory=list)
    left_out: str = ''


def most_exposed(dose_ct: np.ndarray, oars: dict[str, np.ndarray], n: int = N_OARS) -> list[str]:
    """The (up to) ``n`` non-empty organs at risk with the highest (D5 + Dmean) / 2 on the CT dose, highest first
    (ties by name)."""
    exposure = {name: (dose_at_volume(dose_ct, m, 5) + float(dose_ct[m].mean())) / 2
                for name, m in oars.items() if m.any()}
    return sorted(exposure, key=lambda name: (-exposure[name], name))[:n]


def dvh_metric(dose_ct: np.ndarray, dose_sct: np.ndarray, target: np.ndarray, oars: dict[str, np.ndarray],
               prescription_gy: float) -> DvhMetric:
    """The DVH metric of ``dose_sct`` against ``dose_ct`` for the boolean ``target`` and organ-at-risk masks
    (all on the dose grid). ValueError for an empty target."""
    if not target.any():
        raise ValueError('the target is empty on the dose grid')
    d98 = relative_difference(dose_at_volume(dose_ct, target, 98), dose_at_volume(dose_sct, target, 98))
    v95_gy = 0.95 * prescription_gy
    v95 = relative_difference(volume_at_dose(dose_ct, target, v95_gy), volume_at_dose(dose_sct, target, v95_gy))
    used = most_exposed(dose_ct, oars)
    if not used:
        why = 'no organ-at-risk masks' if not oars else 'the organ-at-risk masks are empty on the dose grid'
        return DvhMetric(d98 + v95, d98, v95, left_out=f'OAR D2 and Dmean terms left out ({why})')
    d2 = float(np.mean([relative_difference(dose_at_volume(dose_ct, oars[o], 2), dose_at_volume(dose_sct, oars[o], 2))
                        for o in used]))
    dmean = float(np.mean([relative_difference(float(dose_ct[oars[o]].mean()), float(dose_sct[oars[o]].mean()))
                           for o in used]))
    left_out = f'only {len(used)} organ(s) at risk' if len(used) < N_OARS else ''
    return DvhMetric(d98 + v95 + d2 + dmean, d98, v95, d2, dmean, used, left_out)
