"""The dose metrics (evaluation/dose/metrics.py, gamma.py) on hand-made doses whose values are worked out by hand
here: dose MAE above 90 % of the prescription, the DVH metric's D98, V95, D2 and Dmean terms and its choice of
the three most exposed organs, and pymedphys's gamma on shifted and scaled profiles (2 % / 2 mm)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.dose.metrics import dose_at_volume, dose_mae, dvh_metric, volume_at_dose


def test_dose_mae_is_taken_over_the_voxels_above_90_percent_of_the_prescription():
    ct = np.array([10.0, 9.0, 8.9, 5.0])
    sct = np.array([9.5, 9.3, 0.0, 5.0])
    # prescription 10 Gy: the voxels with CT dose >= 9 Gy are the first two; (0.5 + 0.3) / 2 / 10 = 0.04
    assert dose_mae(ct, sct, 10.0) == pytest.approx(0.04)
    assert math.isnan(dose_mae(ct, sct, 20.0))      # no voxel reaches 18 Gy


def test_dvh_values_by_nearest_rank():
    dose = np.arange(1.0, 101.0)                     # 100 voxels, 1 .. 100 Gy
    mask = np.ones(100, bool)
    assert dose_at_volume(dose, mask, 98) == 3.0     # the 98 hottest voxels get at least 3 Gy
    assert dose_at_volume(dose, mask, 2) == 99.0     # the 2 hottest at least 99 Gy
    # 40 voxels, 1 .. 40 Gy: 98 % is 39.2 voxels, so all 40 count and D98 is the coldest, 1 Gy
    assert dose_at_volume(np.arange(1.0, 41.0), np.ones(40, bool), 98) == 1.0
    assert volume_at_dose(dose, mask, 95.0) == 6.0   # 95 .. 100 Gy: 6 of 100 voxels
    with pytest.raises(ValueError, match='empty'):
        dose_at_volume(dose, np.zeros(100, bool), 98)


def test_dvh_metric_by_hand_on_a_tiny_volume():
    # one row of 22 voxels: 10 target voxels, then four organs of 3 voxels each; prescription 10 Gy
    ct = np.array([9.0, 9.6, 9.8, 10, 10, 10, 10, 10.2, 10.4, 10.6,
                   4, 4, 4,  6, 6, 6,  2, 2, 2,  1, 1, 1])
    sct = np.array([8.1, 9.4, 9.8, 10, 10, 10, 10, 10.2, 10.4, 10.6,
                    4, 4, 5,  6, 6, 6,  2, 2, 2.5,  0, 0, 0])
    target = np.zeros(22, bool)
    target[:10] = True
    oars = {}
    for k, name in enumerate(('a', 'b', 'c', 'far')):
        oars[name] = np.zeros(22, bool)
        oars[name][10 + 3 * k:13 + 3 * k] = True
    m = dvh_metric(ct, sct, target, oars, 10.0)
    # D98 (the 10th hottest of 10): 9.0 vs 8.1 -> 0.9 / 9 = 0.1
    assert m.d98 == pytest.approx(0.1)
    # V95 (>= 9.5 Gy): 9 of 10 = 90 % vs 8 of 10 = 80 % -> 10 / 90
    assert m.v95 == pytest.approx(10 / 90)
    # most exposed by (D5 + Dmean) / 2 on the CT dose: b (6), a (4), c (2); 'far' (1) is left out
    assert m.oars == ['b', 'a', 'c']
    # D2 (the hottest voxel of 3): b 6 vs 6 -> 0, a 4 vs 5 -> 0.25, c 2 vs 2.5 -> 0.25; mean 0.5 / 3
    assert m.d2 == pytest.approx(0.5 / 3)
    # Dmean: b 0, a 4 vs 13/3 -> 1/12, c 2 vs 6.5/3 -> 1/12; mean (1/6) / 3
    assert m.dmean == pytest.approx(1 / 18)
    assert m.value == pytest.approx(0.1 + 10 / 90 + 0.5 / 3 + 1 / 18)
    assert m.left_out == ''


def test_dvh_metric_without_organs_says_which_terms_are_left_out():
    ct, sct = np.full(8, 10.0), np.full(8, 9.0)
    target = np.ones(8, bool)
    m = dvh_metric(ct, sct, target, {}, 10.0)
    # D98 10 vs 9 -> 0.1; V95 100 % vs 0 % -> 1
    assert m.value == pytest.approx(1.1)
    assert 'OAR D2 and Dmean terms left out' in m.left_out and m.oars == []
    with pytest.raises(ValueError, match='target is empty'):
        dvh_metric(ct, sct, np.zeros(8, bool), {}, 10.0)


# ---------------------------------------------------------------------------- gamma (pymedphys)

def profile_dose(values: np.ndarray) -> np.ndarray:
    """A 1 mm grid dose that varies along the first axis only: (len(values), 2, 2)."""
    return np.repeat(np.repeat(values[:, None, None], 2, axis=1), 2, axis=2)


def edge(shift_mm: float) -> np.ndarray:
    """A steep fall-off (100 -> 0 Gy over about 2 mm) at x = 20 + shift on a 1 mm grid, 40 points."""
    x = np.arange(40.0)
    return 100 / (1 + np.exp((x - 20 - shift_mm) / 0.4))


@pytest.fixture(scope='module')
def gamma_tools():
    pytest.importorskip('pymedphys')
    pytest.importorskip('numba')
    from evaluation.dose.gamma import gamma_map, pass_rate
    return gamma_map, pass_rate


def test_gamma_a_1mm_shift_passes_2mm_and_a_3mm_shift_in_a_steep_gradient_fails(gamma_tools):
    gamma_map, pass_rate = gamma_tools
    ct = profile_dose(edge(0))
    one = gamma_map(ct, profile_dose(edge(1)), (1.0, 1.0, 1.0))
    # every dose value of the shifted profile is found 1 mm away: gamma <= 1 / 2
    assert pass_rate(one) == 100.0 and np.nanmax(one) <= 0.5 + 1e-3
    three = gamma_map(ct, profile_dose(edge(3)), (1.0, 1.0, 1.0))
    # at the CT's edge (50 Gy) the 3 mm shifted dose is ~100 Gy and falls to 50 Gy only 3 mm on: gamma ~1.5
    assert three[20, 0, 0] > 1
    assert pass_rate(three) < 100.0


def test_gamma_a_1_percent_scaling_passes_and_3_percent_fails_in_the_high_dose_region(gamma_tools):
    gamma_map, pass_rate = gamma_tools
    ct = profile_dose(np.full(12, 50.0))            # a flat dose: no nearby voxel can make up a dose difference
    assert pass_rate(gamma_map(ct, ct * 1.01, (1.0, 1.0, 1.0))) == 100.0     # 1 % < 2 %: gamma 0.5
    g = gamma_map(ct, ct * 1.03, (1.0, 1.0, 1.0))
    assert pass_rate(g) == 0.0 and np.nanmin(g) == pytest.approx(1.5, abs=1e-3)   # 3 % / 2 % = 1.5


def test_gamma_leaves_out_points_below_10_percent_of_the_maximum(gamma_tools):
    gamma_map, pass_rate = gamma_tools
    ct = profile_dose(np.array([100.0] * 6 + [5.0] * 6))
    sct = profile_dose(np.array([100.0] * 6 + [50.0] * 6))       # wrong only where the CT dose is below 10 Gy
    g = gamma_map(ct, sct, (1.0, 1.0, 1.0))
    assert np.isnan(g[6:]).all() and pass_rate(g) == 100.0
