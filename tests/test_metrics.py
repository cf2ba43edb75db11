"""Tests for util/metrics.py against hand values and scikit-image on the same arrays."""
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from util.metrics import (masked_mae, masked_psnr, masked_ssim, psnr, slice_metrics, ssim, ssim_map,
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
