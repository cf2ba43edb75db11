"""Image quality metrics: per-slice PSNR/SSIM as the paper reports them (section IV-C, Tables II-III) and the
per-volume SynthRAD2023 set (MAE, PSNR, SSIM inside the body mask) computed as its official evaluation does.

Per-slice metrics take images in the network's range [-1, 1] with data range 2, over the whole slice
(background included), as 2D images at the training size (e.g. 256x256). Volume metrics take arrays in source
units (HU for CT) and a body mask; for CT the window is the SynthRAD2023 range [-1024, 3000] HU.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import uniform_filter

# The SynthRAD2023 evaluation clips CT to this range (HU); its width 4024 is the PSNR/SSIM data range.
SYNTHRAD_HU_RANGE = (-1024.0, 3000.0)
SSIM_WINDOW = 7  # voxels per side of the uniform SSIM window (scikit-image's default)
_K1, _K2 = 0.01, 0.03


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), over all elements.

    Per slice the paper's PSNR: images in [-1, 1], data range 2. Identical images give +inf.
    """
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    mse = float(np.mean((p - t) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float, win_size: int = SSIM_WINDOW) -> np.ndarray:
    """Local SSIM of two n-D arrays (2D slice or 3D volume), same shape, float64.

    Uniform ``win_size``^n window (scipy ``uniform_filter``, reflected borders), unbiased (sample) covariances,
    C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R = ``data_range``: the definition scikit-image uses by default.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f'SSIM needs arrays of the same shape, got {x.shape} and {y.shape}')
    if min(x.shape) < win_size:
        raise ValueError(f'SSIM window {win_size} is larger than the image {x.shape}')
    n = win_size ** x.ndim
    cov_norm = n / (n - 1)
    ux, uy = uniform_filter(x, win_size), uniform_filter(y, win_size)
    vx = cov_norm * (uniform_filter(x * x, win_size) - ux * ux)
    vy = cov_norm * (uniform_filter(y * y, win_size) - uy * uy)
    vxy = cov_norm * (uniform_filter(x * y, win_size) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _trim(a: np.ndarray, border: int) -> np.ndarray:
    """``a`` without ``border`` elements on each side of every axis."""
    return a[tuple(slice(border, s - border) for s in a.shape)]


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 2.0, win_size: int = SSIM_WINDOW) -> float:
    """Mean SSIM of a slice: (H, W), or (C, H, W) averaged over channels; the per-slice SSIM of the paper.

    Images in [-1, 1], data range 2, 7x7 uniform window; the mean leaves out a (win_size - 1) / 2 border,
    as scikit-image's ``structural_similarity`` does.
    """
    p, t = np.asarray(pred), np.asarray(target)
    if p.ndim == 2:
        p, t = p[None], t[None]
    border = (win_size - 1) // 2
    return float(np.mean([_trim(ssim_map(pc, tc, data_range, win_size), border).mean() for pc, tc in zip(p, t)]))


def slice_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """{'psnr', 'ssim'} of one slice (C, H, W) or (H, W) in [-1, 1] (data range 2)."""
    return {'psnr': psnr(pred, target, 2.0), 'ssim': ssim(pred, target, 2.0)}


def masked_mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over mask voxels, in source units (HU for CT), without clipping (SynthRAD2023)."""
    m = _mask(mask, target)
    return float(np.abs(np.asarray(pred, np.float64)[m] - np.asarray(target, np.float64)[m]).mean())


def masked_psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                window: tuple[float, float] = SYNTHRAD_HU_RANGE) -> float:
    """PSNR over mask voxels after clipping both volumes to ``window``, data range high - low (4024 HU for CT)."""
    m = _mask(mask, target)
    low, high = window
    return psnr(np.clip(pred, low, high)[m], np.clip(target, low, high)[m], high - low)


def masked_ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                window: tuple[float, float] = SYNTHRAD_HU_RANGE, win_size: int = SSIM_WINDOW) -> float:
    """3D SSIM as SynthRAD2023 scores it: both volumes clipped to ``window``, voxels outside the mask set to the
    window's low end, shifted by -low (so >= 0), 3D SSIM with a 7-voxel uniform window and data range
    high - low, then the SSIM map averaged over mask voxels after trimming a 3-voxel border."""
    m = _mask(mask, target)
    low, high = window

    def prepare(v: np.ndarray) -> np.ndarray:
        return np.where(m, np.clip(np.asarray(v, np.float64), low, high), low) - low

    border = (win_size - 1) // 2
    smap = ssim_map(prepare(pred), prepare(target), high - low, win_size)
    inside = _trim(m, border)
    if not inside.any():
        raise ValueError('SSIM: the mask has no voxels away from the volume border')
    return float(_trim(smap, border)[inside].mean())


def volume_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                   window: tuple[float, float] = SYNTHRAD_HU_RANGE) -> dict[str, float]:
    """The SynthRAD2023 set {'mae', 'psnr', 'ssim'} of a volume in source units (HU and [-1024, 3000] for CT)."""
    return {'mae': masked_mae(pred, target, mask), 'psnr': masked_psnr(pred, target, mask, window),
            'ssim': masked_ssim(pred, target, mask, window)}


def volume_problems(shape: tuple[int, ...], win_size: int = SSIM_WINDOW) -> dict[str, str]:
    """metric -> why it cannot be computed for a volume of ``shape``, known before any prediction is made."""
    if min(shape) < win_size:
        return {'ssim': f'the volume {tuple(shape)} is thinner than the {win_size}-voxel SSIM window'}
    return {}


def volume_metrics_or_nan(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                          window: tuple[float, float] = SYNTHRAD_HU_RANGE) -> tuple[dict[str, float], dict[str, str]]:
    """:func:`volume_metrics`, with NaN for a metric that cannot be computed (volume thinner than the SSIM
    window, empty mask) and, in the second dict, metric -> the reason."""
    values, problems = {}, {}
    for name, fn in (('mae', lambda: masked_mae(pred, target, mask)),
                     ('psnr', lambda: masked_psnr(pred, target, mask, window)),
                     ('ssim', lambda: masked_ssim(pred, target, mask, window))):
        try:
            values[name] = fn()
        except ValueError as exc:
            values[name], problems[name] = math.nan, str(exc)
    return values, problems


def _mask(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    m = np.asarray(mask) > 0
    if m.shape != np.shape(like):
        raise ValueError(f'mask shape {m.shape} differs from the volume shape {np.shape(like)}')
    if not m.any():
        raise ValueError('the mask is empty')
    return m
