"""Air outside the body where the training loss left a prediction unconstrained (``--outside_body``).

A model trained with ``--loss_region body`` learns nothing outside the body mask grown by ``--body_margin_voxels``
voxels and ``--body_dilation`` pixels: there its output is whatever the network happens to give (a grey haze where
the CT has air), which every SynthRAD metric ignores but a planning system does not (its external contour is a
threshold, about -400 HU: a haze above it becomes patient). So the synthetic volume is composited with the body
mask of the input (the subject's mask in test.py, the MR's given or computed mask in predict): inside the mask
grown by the training margin the prediction is kept unchanged; outside it every voxel is air, -1 in [-1, 1] (the
low end of the target window: -1024 HU for CT).

``--outside_body auto`` (the default) does this for the checkpoints trained with ``--loss_region body`` (for an
ensemble: when a member was, with the largest margin of those members) and keeps a whole-slice model's output as
it is (its L1 asked for air there); ``air`` composites any model (with its stored margin, 0 for a whole-slice
model: the mask itself); ``keep`` turns it off.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.loading import stored_training_options
from util.slicing import PLANES, fitted_size, in_plane_axes, plane_axis

OUTSIDE_BODY_MODES = ('auto', 'air', 'keep')
AIR = -1.0                                # air in [-1, 1]: the low end of the target window


def add_outside_body_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--outside_body (test.py and predict)."""
    parser.add_argument('--outside_body', default='auto', choices=OUTSIDE_BODY_MODES,
                        help='voxels outside the body mask grown by the training margin: "air" sets them to the '
                             'low end of the target window (-1024 HU), "keep" keeps the model\'s output, "auto" '
                             '(default) is air for checkpoints trained with --loss_region body (whose loss left '
                             'the outside unconstrained) and keep for the others')
    return parser


@dataclass(frozen=True)
class BodyComposite:
    """Air outside the body mask grown by ``margin_voxels`` voxels of the volume's grid plus ``dilation_pixels``
    pixels of the ``crop_size`` training slices (``mode`` 'resize' or 'pad'), converted to voxels."""
    margin_voxels: int
    dilation_pixels: int
    crop_size: int
    mode: str

    def grow_voxels(self, shape: tuple[int, int, int], zooms: tuple[float, float, float]) -> int:
        """The margin in voxels of a canonical volume ``shape`` with voxel size ``zooms`` (mm): the voxel margin
        plus the pixel margin in voxels where a voxel spans the fewest pixels (so the grown mask covers every
        pixel the loss saw, in every plane)."""
        if self.dilation_pixels <= 0:
            return self.margin_voxels
        fewest = math.inf                 # pixels per voxel, over the planes and their two in-plane axes
        for plane in PLANES:
            u, v = in_plane_axes(plane_axis(plane))
            hw = (shape[v], shape[u])
            inner = fitted_size(hw, (zooms[v], zooms[u]), self.crop_size, self.mode)
            fewest = min(fewest, inner[0] / hw[0], inner[1] / hw[1])
        return self.margin_voxels + math.ceil(self.dilation_pixels / fewest)

    def keep(self, mask: np.ndarray, zooms: tuple[float, float, float]) -> np.ndarray:
        """Where the prediction is kept: the canonical bool ``mask`` grown by :meth:`grow_voxels` in 3D (a
        3x3x3 cube per step: every voxel an in-plane margin of any plane reaches)."""
        mask = np.asarray(mask, bool)
        grow = self.grow_voxels(mask.shape, zooms)
        if grow <= 0 or not mask.any():
            return mask
        return ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool), iterations=grow)

    def describe(self) -> str:
        margin = f'{self.margin_voxels} voxel(s)' + (f' + {self.dilation_pixels} pixel(s)'
                                                     if self.dilation_pixels else '')
        return f'air outside the body mask grown by {margin} (--outside_body keep turns it off)'


def composite_for(mode: str, options: list[dict]) -> BodyComposite | None:
    """The compositing of ``--outside_body mode`` for checkpoints trained with ``options`` (their stored training
    options, one dict per ensemble member); None when the output is kept as it is."""
    if mode not in OUTSIDE_BODY_MODES:
        raise ValueError(f'--outside_body {mode}: use one of {", ".join(OUTSIDE_BODY_MODES)}')
    body = [o for o in options if o.get('loss_region', 'slice') == 'body']
    if mode == 'keep' or (mode == 'auto' and not body):
        return None
    chosen = body or options
    first = options[0]
    return BodyComposite(max(int(o.get('body_margin_voxels', 0)) for o in chosen),
                         max(int(o.get('body_dilation', 0)) for o in chosen),
                         int(first.get('crop_size', 256)), first.get('preprocess', 'resize'))


def checkpoint_composite(mode: str, checkpoints_dir: str, names: list[str], epoch: str) -> BodyComposite | None:
    """:func:`composite_for` the checkpoints ``<checkpoints_dir>/<name>/<epoch>_net_G.pth`` of ``names`` (test.py;
    a missing one counts as a whole-slice model, test.py reports it itself)."""
    return composite_for(mode, [stored_training_options(checkpoints_dir, n, epoch) for n in names])
