"""Tests for evaluation/metrics.py against hand values and scikit-image on the same arrays."""
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation.metrics import (masked_mae, masked_psnr, masked_ssim, psnr, slice_metrics, ssim, ssim_map,
                          volume_metrics)


def smooth_pair(shape, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    a = np.tanh(gaussian_filter(rng.normal(size=shape), 2) * 5)
    return a, np.clip(a + rng.normal(0, noise, shape), -1, 1)


def test_psnr_hand_value_and_identical():
    t = np.zeros((8, 8))
    assert psnr(t + 0.1, t) == pytest.approx(10 * math.log10(4 / 0.01))   # 26.0206 dB
    assert psnr(t, t) == math.inf


def test_slice_psnr_and_ssim_match_scikit_image():
    a, b = smooth_pair((64, 64))
    assert psnr(b, a) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=2), rel=1e-12)
    assert ssim(b, a) == pytest.approx(structural_similarity(a, b, data_range=2), rel=1e-10)
    m = slice_metrics(b, a)
    assert m == pytest.approx({'psnr': psnr(b, a), 'ssim': ssim(b, a)})


def test_multichannel_ssim_is_channel_mean_as_scikit_image():
    a, b = smooth_pair((3, 40, 48), seed=1)
    assert ssim(b, a) == pytest.approx(structural_similarity(a, b, data_range=2, channel_axis=0), rel=1e-10)


def test_3d_ssim_map_matches_scikit_image():
    a, b = smooth_pair((12, 14, 10), seed=2)
    _, ref = structural_similarity(a, b, data_range=2, full=True)
    np.testing.assert_allclose(ssim_map(a, b, 2), ref, rtol=1e-9, atol=1e-12)


def ct_pair(seed=3):
    """HU volumes with values beyond the SynthRAD range, a body mask and a prediction with errors."""
    rng = np.random.default_rng(seed)
    gt = gaussian_filter(rng.normal(size=(16, 18, 14)), 1.5) * 4000 + 500          # roughly -3000..4000 HU
    pred = gt + rng.normal(0, 80, gt.shape)
    mask = np.zeros(gt.shape, bool)
    mask[2:14, 3:16, 2:12] = True
    return pred, gt, mask


def test_mae_is_unclipped_mean_inside_mask():
    pred, gt, mask = ct_pair()
    pred[~mask] += 1e5                                                              # outside: ignored
    pred[mask.nonzero()[0][0], mask.nonzero()[1][0], mask.nonzero()[2][0]] += 5000  # beyond the window: counted
    assert masked_mae(pred, gt, mask) == pytest.approx(np.abs(pred - gt)[mask].mean())
    assert masked_mae(gt + 10, gt, mask) == pytest.approx(10)


def test_masked_psnr_as_synthrad_official():
    pred, gt, mask = ct_pair()
    ref = peak_signal_noise_ratio(np.clip(gt, -1024, 3000)[mask], np.clip(pred, -1024, 3000)[mask], data_range=4024)
    assert masked_psnr(pred, gt, mask) == pytest.approx(ref, rel=1e-12)


def test_masked_ssim_as_synthrad_official():
    pred, gt, mask = ct_pair()

    def prepare(v):
        return np.where(mask, np.clip(v, -1024, 3000), -1024) + 1024

    _, full = structural_similarity(prepare(gt), prepare(pred), data_range=4024, full=True)
    ref = full[3:-3, 3:-3, 3:-3][mask[3:-3, 3:-3, 3:-3]].mean()
    assert masked_ssim(pred, gt, mask) == pytest.approx(ref, rel=1e-10)
    assert volume_metrics(pred, gt, mask) == pytest.approx(
        {'mae': masked_mae(pred, gt, mask), 'psnr': masked_psnr(pred, gt, mask), 'ssim': ref})
    assert masked_ssim(gt, gt, mask) == pytest.approx(1.0)


def test_metric_errors():
    with pytest.raises(ValueError, match='same shape'):
        ssim_map(np.zeros((8, 8)), np.zeros((8, 9)), 2)
    with pytest.raises(ValueError, match='larger than the image'):
        ssim(np.zeros((5, 5)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match='the mask is empty'):
        masked_mae(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match='mask shape'):
        masked_psnr(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.ones((4, 4, 3)))


# ----------------------------------------------------------------------------- SynthRAD2025 (--metrics synthrad2025)

def test_downsample2_is_a_zero_bordered_2x2x2_box_then_every_other_voxel():
    """Hand values along one axis, and the same as scipy's fftconvolve with a 2x2x2 box in 'same' mode."""
    from scipy.signal import fftconvolve
    from evaluation.metrics import downsample2
    x = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    np.testing.assert_allclose(downsample2(x), [1.0, 5.0, 9.0])      # (0+2)/2, (4+6)/2, (8+10)/2
    v = np.random.default_rng(0).normal(size=(9, 8, 7))
    expected = fftconvolve(v, np.ones((2, 2, 2)) / 8, mode='same')[::2, ::2, ::2]
    np.testing.assert_allclose(downsample2(v), expected, atol=1e-12)


def test_ms_ssim_of_identical_volumes_is_one_whatever_lies_outside_the_mask():
    from evaluation.metrics import masked_ms_ssim
    rng = np.random.default_rng(1)
    truth = rng.normal(0, 400, (30, 24, 20))
    mask = np.zeros(truth.shape, bool)
    mask[5:25, 4:20, 3:17] = True
    pred = np.where(mask, truth, rng.normal(0, 900, truth.shape))      # garbage outside the body
    assert masked_ms_ssim(pred, truth, mask) == pytest.approx(1.0, abs=1e-12)
    clipped = np.where(truth > 3000, 5000, truth)                       # above the window: clipped alike
    assert masked_ms_ssim(np.where(truth > 3000, 9000, clipped), clipped, mask) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_single_level_of_constant_volumes_is_the_luminance_term_to_the_weight():
    """Constant a and b in a window [0, 100]: contrast and structure are 1, luminance (2ab + C1)/(a^2 + b^2 + C1)
    with C1 = (0.01 * 100)^2 = 1, raised to the level weight (the organisers' exponent): a=50, b=40 gives
    4001/4101, and its square root with weight 0.5."""
    from evaluation.metrics import masked_ms_ssim
    a, b = np.full((20, 20, 20), 50.0), np.full((20, 20, 20), 40.0)
    mask = np.ones(a.shape, bool)
    assert masked_ms_ssim(a, b, mask, (0.0, 100.0), weights=(1.0,)) == pytest.approx(4001 / 4101, abs=1e-12)
    assert masked_ms_ssim(a, b, mask, (0.0, 100.0), weights=(0.5,)) == pytest.approx((4001 / 4101) ** 0.5,
                                                                                      abs=1e-12)


def test_ms_ssim_first_level_is_scikit_image_ssim_and_levels_multiply():
    """With one level of weight 1 and no voxel clipped by the l, c, s >= 0 rule, MS-SSIM is scikit-image's 3D SSIM
    (7-voxel uniform window, sample covariance, 3-voxel border left out) of the volumes shifted by -low; the
    5-level value lies below it and is the product of per-level means in (0, 1]."""
    from evaluation.metrics import masked_ms_ssim
    a, b = smooth_pair((97, 97, 97), seed=2, noise=0.05)
    truth, pred = a * 1000, b * 1000                                   # HU in [-1000, 1000]
    mask = np.ones(truth.shape, bool)
    one = masked_ms_ssim(pred, truth, mask, weights=(1.0,))
    expected = structural_similarity(pred + 1024, truth + 1024, data_range=4024.0, win_size=7)
    assert one == pytest.approx(expected, abs=1e-9)
    five = masked_ms_ssim(pred, truth, mask)
    assert 0 < five < 1 and five != pytest.approx(one)


def synthrad2025_case():
    """A 40x44x36 CT pair built for the pinned MS-SSIM value: smooth HU in about [-1400, 2050] (clipped at -1024),
    a prediction scaled, offset and with smooth errors (luminance, contrast and structure all differ at every
    level), garbage outside a box mask."""
    rng = np.random.default_rng(16)
    shape = (40, 44, 36)
    gt = gaussian_filter(rng.normal(size=shape), 2.0) * 6000 + 200
    pred = 0.9 * gt + gaussian_filter(rng.normal(size=shape), 1.0) * 1500 + 150
    mask = np.zeros(shape, bool)
    mask[6:34, 8:38, 5:30] = True
    pred[~mask] = rng.uniform(-1000, 3000, (~mask).sum())
    return pred, gt, mask


def test_five_level_ms_ssim_equals_the_organisers_code():
    """The value pinned here is the SynthRAD2025 organisers' own result on this pair: SynthRAD2025/metrics at commit
    0beef65 (functions/image_metrics.py last changed in f37981d, "Update image_metrics.py to SynthRAD2025
    metrics"), ``ImageMetrics().ms_ssim(gt, pred, mask.astype(float))``, second return value (the masked MS-SSIM),
    run with numpy 2, scipy 1.17.1 and scikit-image 0.26.0: 0.9630895814702523. Its unmasked first value,
    0.9937481354254847, shows the mask matters here. Reversed weights give 0.9503 and the mask left out 0.0192,
    so either breakage (or luminance at the last level only) is caught."""
    from evaluation.metrics import masked_ms_ssim
    pred, gt, mask = synthrad2025_case()
    assert masked_ms_ssim(pred, gt, mask) == pytest.approx(0.9630895814702523, abs=1e-9)


def test_ms_ssim_weights_are_per_level_and_luminance_counts_at_every_level():
    """Per-level means are independent of the weights except as exponents, so with weights (w1..w5) on volumes
    whose every level has the same SSIM terms the result follows the hand formula. Constant volumes a = 50,
    b = 40 in a window [0, 100] on a full mask: C1 = 1, so l = 4001/4101 wherever the zero border of the 2x2x2
    pyramid does not reach (level 1 everywhere), c = s = 1. Level 1 alone with weight w gives l^w; the pinned
    organisers' value above checks the five levels together."""
    from evaluation.metrics import MS_SSIM_WEIGHTS, masked_ms_ssim
    a, b = np.full((97, 97, 97), 50.0), np.full((97, 97, 97), 40.0)
    mask = np.ones(a.shape, bool)
    lum = 4001 / 4101
    # luminance counts at level 1 with its weight (0.0448), not only at the last level
    assert masked_ms_ssim(a, b, mask, (0.0, 100.0), weights=(MS_SSIM_WEIGHTS[0],)) == pytest.approx(
        lum ** 0.0448, abs=1e-12)
    assert masked_ms_ssim(a, b, mask, (0.0, 100.0), weights=(MS_SSIM_WEIGHTS[0], 0.0)) == pytest.approx(
        lum ** 0.0448, abs=1e-12)
    assert MS_SSIM_WEIGHTS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)    # Wang et al. 2003, finest first


def test_ms_ssim_ignores_what_lies_outside_the_mask_at_every_level():
    """The same pair with the outside replaced by other garbage gives the same value (to 1e-12), and the value
    over the full volume is far lower."""
    from evaluation.metrics import masked_ms_ssim
    pred, gt, mask = synthrad2025_case()
    other = np.where(mask, pred, -pred[::-1])
    assert masked_ms_ssim(other, gt, mask) == pytest.approx(masked_ms_ssim(pred, gt, mask), abs=1e-12)
    assert masked_ms_ssim(pred, gt, np.ones(mask.shape, bool)) < 0.1


def test_volume_metrics_sets():
    from evaluation.metrics import metric_window
    t = np.zeros((10, 10, 10))
    t[2:8, 2:8, 2:8] = 100.0
    mask = t > 0
    p = t + 10.0 * mask
    m23 = volume_metrics(p, t, mask, metric_window('synthrad2023', 'ct'))
    m25 = volume_metrics(p, t, mask, metric_window('synthrad2025', 'ct'), 'synthrad2025')
    assert set(m23) == {'mae', 'psnr', 'ssim'} and set(m25) == {'mae', 'psnr', 'ms_ssim'}
    assert m23['mae'] == m25['mae'] == pytest.approx(10.0)
    assert m23['psnr'] == pytest.approx(20 * math.log10(4024 / 10))     # data range 3000 + 1024
    assert m25['psnr'] == pytest.approx(20 * math.log10(4024 / 10))     # data range 3000 + 1024, as SynthRAD2025
    with pytest.raises(ValueError, match='--metrics synthrad2024: unknown metric set'):
        volume_metrics(p, t, mask, metrics='synthrad2024')
