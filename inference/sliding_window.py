"""Whole volumes through a 3D network (``--netG unet3d``, trained on ``--dataset_mode patch3d`` patches) by sliding
windows, the volumetric counterpart of the slice-wise path (inference/predictor.py, inference/test_time.py).

The window is the checkpoint's ``--patch_size``; windows overlap by ``--sw_overlap`` (a fraction of the window,
default 0.5) and are blended by MONAI's ``sliding_window_inference`` with a Gaussian importance map: each voxel's
output is the weighted mean of every window covering it, the weights summing to one. The map is nnU-Net's
(:func:`gaussian_weights`: sigma = 1/8 of the window, peak 1, no floor), not MONAI's own, which raises every weight
below 1e-3 to 1e-3: near the volume's faces, where each covering window sees the voxel near its edge, that gives a
window's edge (where a convolution sees its zero padding) as much say as another window's centre. A volume smaller
than the window is padded with -1 (air in [-1, 1], as slices are padded) and the padding cut off again.

``--tta flip`` mirrors each window along every subset of the three spatial axes (the 2^3 = 8 mirrorings, identity
included, as nnU-Net's test-time mirroring), flips each output back and averages them; their per-voxel standard
deviation is the TTA ``spread`` (1, X, Y, Z) in [-1, 1] units, blended like the output. An ensemble of 3D
checkpoints runs each member over the whole volume (its own window and TTA) and fuses them voxel-wise
(``inference.test_time.fuse``, mean or median), the members' spread joining the TTA spread.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from data.resampling import resample, resampled_shape
from inference.test_time import fuse

DEFAULT_OVERLAP = 0.5
SIGMA_SCALE = 0.125                     # nnU-Net's Gaussian: sigma = 1/8 of the window along each axis
AIR = -1.0                              # padding of a volume smaller than the window, in [-1, 1]
# every subset of the spatial axes (N, C, X, Y, Z) -> (-3, -2, -1), the identity last as in test_time.FLIPS
MIRRORS = tuple(d for n in (1, 2, 3) for d in itertools.combinations((-3, -2, -1), n)) + ((),)


def gaussian_weights(patch: tuple[int, int, int], sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """(X, Y, Z) importance of each voxel of a window of ``patch`` voxels: the product over axes of
    exp(-d^2 / (2 sigma^2)), d the distance (voxels) from the window's centre and sigma = ``sigma_scale`` x the
    window's length, divided by its maximum (1 at the centre)."""
    axes = []
    for n in patch:
        d = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        axes.append(torch.exp(-d ** 2 / (2 * (sigma_scale * n) ** 2)))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (weights / weights.max()).float()


def check_overlap(overlap: float) -> float:
    """``overlap`` (--sw_overlap) when it lies in [0, 1); ValueError naming the flag otherwise."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f'--sw_overlap {overlap}: the windows\' overlap is a fraction of the window in [0, 1) '
                         f'(0.5, the default, moves each window by half its size)')
    return overlap


def mirrored(net, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (N, C, X, Y, Z), spread (N, 1, X, Y, Z)) of ``net`` on the windows ``x`` and their 7 mirrorings,
    each output flipped back (:data:`MIRRORS`, :func:`inference.test_time.fuse`)."""
    return fuse(torch.stack([net(x.flip(d)).flip(d) if d else net(x) for d in MIRRORS]).float())


def sliding_window(net, volume: torch.Tensor, patch: tuple[int, int, int], overlap: float = DEFAULT_OVERLAP,
                   tta: str = 'none', batch_size: int = 2,
                   device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``net`` over the whole ``volume`` (C, X, Y, Z) in [-1, 1], window ``patch`` voxels, Gaussian blending:
    (output (C_out, X, Y, Z), spread (1, X, Y, Z) or None without TTA), float32 on the CPU. ``batch_size`` windows
    go through ``net`` at once, on ``device`` (default: the volume's)."""
    from monai.inferers import sliding_window_inference     # imported here: MONAI costs 3D runs only its seconds
    device = device or volume.device
    check_overlap(overlap)
    predictor = (lambda x: mirrored(net, x)) if tta == 'flip' else (lambda x: net(x).float())
    patch = tuple(int(p) for p in patch)
    with torch.no_grad():
        out = sliding_window_inference(volume[None].float(), patch, batch_size, predictor, overlap=overlap,
                                       mode='gaussian', roi_weight_map=gaussian_weights(patch).to(device),
                                       padding_mode='constant', cval=AIR, sw_device=device,
                                       device=torch.device('cpu'))
    if tta == 'flip':
        fused, spread = out
        return fused[0].float(), spread[0].float()
    return out[0].float(), None


def translate_volume(members: list, fusion: str, volume: torch.Tensor, overlap: float = DEFAULT_OVERLAP,
                     batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(output (C_out, X, Y, Z), spread (1, X, Y, Z) or None) of one or more trained 3D generators
    (:class:`inference.loading.TrainedGenerator`: ``net``, ``settings.patch``, ``settings.tta``, ``device``) on
    ``volume`` (C, X, Y, Z) in [-1, 1]; several are fused voxel-wise by ``fusion`` ('mean' or 'median')."""
    outputs, spreads = [], []
    for member in members:
        out, spread = sliding_window(member.net, volume, member.settings.patch, overlap, member.settings.tta,
                                     batch_size, member.device)
        outputs.append(out[None])
        if spread is not None:
            spreads.append(spread[None])
    if len(outputs) == 1:
        return outputs[0][0], spreads[0][0] if spreads else None
    fused, spread = fuse(torch.stack(outputs), fusion, spreads)
    return fused[0], spread[0]


def predict_canonical(generator, volume, zooms: tuple[float, float, float], overlap: float = DEFAULT_OVERLAP,
                      batch_size: int = 2):
    """A 3D generator (or ensemble, :class:`inference.loading.TrainedGenerator` with ``settings.patch``) on one
    canonical volume ``volume`` (X, Y, Z) in [-1, 1] of voxel size ``zooms`` (mm): resampled onto the training
    grid (``settings.spacing``, data/resampling.py) when it had one, run by :func:`translate_volume`, the output's
    channels averaged and resampled back. Returns numpy (fused (X, Y, Z) in [-1, 1], spread (X, Y, Z) or None)."""
    s = generator.settings
    shape = tuple(volume.shape)
    x = torch.as_tensor(np.asarray(volume, np.float32))[None].expand(s.input_nc, -1, -1, -1)
    x = resample(x, resampled_shape(shape, zooms, s.spacing))
    out, spread = translate_volume(generator.members or [generator], generator.fuse, x, overlap, batch_size)
    fused = resample(out.mean(0, keepdim=True), shape)[0].numpy()
    return fused, None if spread is None else resample(spread, shape)[0].numpy()


def slice_flags_problem(path: str, spread: bool, planes: str | None = None, fusion: str | None = None,
                        save_planes: bool = False, disagreement: bool = False) -> str | None:
    """Why predict's slice-only flags cannot apply to the 3D checkpoint ``path`` (a sentence naming the flags and
    the checkpoint), None when none was given; ``spread``: the prediction has a TTA / ensemble spread, without
    which --disagreement has nothing to show (a 3D network makes one pass, no planes)."""
    given = [f'--{k}' for k, v in (('planes', planes), ('fusion', fusion), ('save_planes', save_planes)) if v]
    if given:
        return (f'{" ".join(given)} applies to slice-wise checkpoints; {path} is a 3D network (--netG unet3d) that '
                f'predicts the whole volume by sliding windows: leave {" ".join(given)} out')
    if disagreement and not spread:
        return (f'--disagreement: {path} is a 3D network (one pass over the volume, no planes), so there is nothing '
                f'to disagree; add --tta flip or fuse an ensemble (--name a,b)')
    return None
