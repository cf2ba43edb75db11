"""Image quality metrics: per-slice PSNR/SSIM as the paper reports them (section IV-C, Tables II-III) and the
per-volume sets of the SynthRAD challenges, computed as their organisers' evaluation code does:
SynthRAD2023 (``--metrics synthrad2023``: MAE, PSNR, SSIM inside the body mask, CT window [-1024, 3000] HU) and
SynthRAD2025 (``--metrics synthrad2025``: MAE, PSNR and masked multi-scale SSIM, CT window [-1024, 3000] HU).

Per-slice metrics take images in the network's range [-1, 1] with data range 2, over the whole slice
(background included), as 2D images at the training size (e.g. 256x256). Volume metrics take arrays in source
units (HU for CT) and a body mask; for CT the window is the SynthRAD2023 range [-1024, 3000] HU.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import uniform_filter

from util.intensity import SYNTHRAD_HU_RANGE

# SynthRAD2025 clips to a fixed dynamic_range of [-1024, 3000] HU for PSNR and MS-SSIM (data range 4024):
# SynthRAD2025/metrics, functions/image_metrics.py line 14, `self.dynamic_range = [-1024., 3000.]` (file as of
# commit f37981d, 2025-04-16, "Update image_metrics.py to SynthRAD2025 metrics"; used at lines 111-113 and 215-232)
SYNTHRAD2025_HU_RANGE = (-1024.0, 3000.0)
# MS-SSIM: the 5 scale weights of Wang, Simoncelli and Bovik 2003 (eq. 7), the smallest side the 5 levels need
# (every side is edge-padded up to it), as SynthRAD2025 does
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIDE = 97
METRIC_SETS = {'synthrad2023': ('mae', 'psnr', 'ssim'), 'synthrad2025': ('mae', 'psnr', 'ms_ssim')}
CT_METRIC_WINDOWS = {'synthrad2023': SYNTHRAD_HU_RANGE, 'synthrad2025': SYNTHRAD2025_HU_RANGE}
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
    ux, uy, vx, vy, vxy = _local_moments(x, y, win_size)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _local_moments(x: np.ndarray, y: np.ndarray, win_size: int) -> tuple[np.ndarray, ...]:
    """Local means ux, uy, sample variances vx, vy and covariance vxy under a uniform ``win_size``^n window."""
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
    return ux, uy, vx, vy, vxy


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


def ssim_components(x: np.ndarray, y: np.ndarray, data_range: float,
                    win_size: int = SSIM_WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local luminance l, contrast c and structure s maps of SSIM (Wang et al. 2004, eqs. 6, 9, 10), each
    clipped at 0: l = (2 ux uy + C1) / (ux^2 + uy^2 + C1), c = (2 sx sy + C2) / (vx + vy + C2),
    s = (vxy + C3) / (sx sy + C3), C3 = C2 / 2, with the moments of :func:`ssim_map` (l c s is its SSIM)."""
    ux, uy, vx, vy, vxy = _local_moments(x, y, win_size)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    c3 = c2 / 2
    sx, sy = np.sqrt(np.clip(vx, 0, None)), np.sqrt(np.clip(vy, 0, None))
    lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
    con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    struct = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
    return lum, con, struct


def downsample2(x: np.ndarray) -> np.ndarray:
    """Halve every axis by averaging neighbour pairs: out[m] = (x[2m - 1] + x[2m]) / 2 along each axis, with
    x[-1] = 0 (a 2x2x2 box filter with zero border, then every other voxel; SynthRAD2025's MS-SSIM pyramid)."""
    out = np.asarray(x, np.float64)
    for axis in range(out.ndim):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (1, 0)
        p = np.pad(out, pad)
        half = (n + 1) // 2
        take = lambda start: np.take(p, np.arange(start, start + 2 * half, 2), axis=axis)  # noqa: E731
        out = (take(0) + take(1)) / 2
    return out


def _pad_to(a: np.ndarray, side: int) -> np.ndarray:
    """Edge-pad every axis shorter than ``side`` to ``side`` (half before, the rest after)."""
    pad = [((side - n) // 2, side - n - (side - n) // 2) if n < side else (0, 0) for n in a.shape]
    return np.pad(a, pad, mode='edge')


def masked_ms_ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                   window: tuple[float, float] = SYNTHRAD2025_HU_RANGE,
                   weights: tuple[float, ...] = MS_SSIM_WEIGHTS, win_size: int = SSIM_WINDOW) -> float:
    """Masked multi-scale SSIM as SynthRAD2025 scores a volume.

    Both volumes clipped to ``window``, voxels outside the mask set to its low end, shifted by -low (>= 0); every
    axis edge-padded to at least 97 voxels (mask too). At level j = 1..5 the SSIM map l^w_j c^w_j s^w_j
    (:func:`ssim_components`, 7-voxel uniform window, data range high - low) is averaged over the mask voxels
    away from a 3-voxel border; the volumes are then halved with :func:`downsample2` and the mask by taking every
    other voxel. MS-SSIM = prod_j clip(mean_j, 0, 1). As in the organisers' code, the luminance exponent of every
    level is that level's weight w_j (Wang et al. 2003 use luminance at the coarsest level only).
    """
    m = _mask(mask, target)
    low, high = window

    def prepare(v: np.ndarray) -> np.ndarray:
        return _pad_to(np.where(m, np.clip(np.asarray(v, np.float64), low, high), low) - low, MS_SSIM_MIN_SIDE)

    x, y, inside = prepare(pred), prepare(target), _pad_to(m, MS_SSIM_MIN_SIDE)
    border = (win_size - 1) // 2
    result = 1.0
    for level, w in enumerate(weights):
        lum, con, struct = ssim_components(x, y, high - low, win_size)
        keep = _trim(inside, border)
        if not keep.any():
            raise ValueError(f'MS-SSIM: no mask voxel away from the border at level {level + 1} '
                             f'(shape {inside.shape})')
        level_mean = float(_trim(lum ** w * con ** w * struct ** w, border)[keep].mean())
        result *= min(max(level_mean, 0.0), 1.0)
        if level < len(weights) - 1:
            x, y, inside = downsample2(x), downsample2(y), inside[::2, ::2, ::2]
    return result


def metric_window(metrics: str, kind: str, mr_window: tuple[float, float] | None = None) -> tuple[float, float]:
    """Clip range and data range of a metric set: the challenge's HU window for CT, ``mr_window`` (the target's
    normalisation window) for MR."""
    check_metric_set(metrics)
    if kind == 'ct':
        return CT_METRIC_WINDOWS[metrics]
    if mr_window is None:
        raise ValueError('an MR target needs its intensity window for PSNR and SSIM')
    return mr_window


def check_metric_set(metrics: str) -> None:
    if metrics not in METRIC_SETS:
        raise ValueError(f'--metrics {metrics}: unknown metric set; use one of {", ".join(METRIC_SETS)}')


# name -> fn(pred, target, mask, window) of every volume metric (source units, inside the mask)
VOLUME_METRICS = {
    'mae': lambda pred, target, mask, window: masked_mae(pred, target, mask),
    'psnr': masked_psnr,
    'ssim': masked_ssim,
    'ms_ssim': masked_ms_ssim,
}


def volume_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                   window: tuple[float, float] = SYNTHRAD_HU_RANGE, metrics: str = 'synthrad2023') -> dict[str, float]:
    """The set ``metrics`` of a volume in source units: SynthRAD2023 {'mae', 'psnr', 'ssim'} or SynthRAD2025
    {'mae', 'psnr', 'ms_ssim'}; ``window`` is the clip and data range (see :func:`metric_window`)."""
    check_metric_set(metrics)
    return {name: VOLUME_METRICS[name](pred, target, mask, window) for name in METRIC_SETS[metrics]}


def volume_problems(shape: tuple[int, ...], metrics: str = 'synthrad2023',
                    win_size: int = SSIM_WINDOW) -> dict[str, str]:
    """metric -> why it cannot be computed for a volume of ``shape``, known before any prediction is made (MS-SSIM
    pads thin volumes, as the SynthRAD2025 organisers do)."""
    if 'ssim' in METRIC_SETS[metrics] and min(shape) < win_size:
        return {'ssim': f'the volume {tuple(shape)} is thinner than the {win_size}-voxel SSIM window'}
    return {}


def volume_metrics_or_nan(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                          window: tuple[float, float] = SYNTHRAD_HU_RANGE,
                          metrics: str = 'synthrad2023') -> tuple[dict[str, float], dict[str, str]]:
    """:func:`volume_metrics`, with NaN for a metric that cannot be computed (volume thinner than the SSIM
    window, empty mask) and, in the second dict, metric -> the reason."""
    check_metric_set(metrics)
    values, problems = {}, {}
    for name in METRIC_SETS[metrics]:
        try:
            values[name] = VOLUME_METRICS[name](pred, target, mask, window)
        except ValueError as exc:
            values[name], problems[name] = math.nan, str(exc)
    return values, problems


def finite_stats(values) -> tuple[float, float, int]:
    """(mean, population standard deviation, n) of the finite ``values`` in float64: identical images give
    PSNR = inf and a metric a volume cannot have is NaN, both left out; (NaN, NaN, 0) when none is finite."""
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    return (float(v.mean()), float(v.std()), int(v.size)) if v.size else (math.nan, math.nan, 0)


def _mask(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    m = np.asarray(mask) > 0
    if m.shape != np.shape(like):
        raise ValueError(f'mask shape {m.shape} differs from the volume shape {np.shape(like)}')
    if not m.any():
        raise ValueError('the mask is empty')
    return m
