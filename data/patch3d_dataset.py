"""3D patches of paired volumes (``--dataset_mode patch3d``), sampled as nnU-Net samples them, for ``--model unet3d``.

The subjects, layouts, splits, folds, intensity mapping (CT through ``--ct_window`` HU, MR by ``--mr_percentiles``
body percentiles) and the memory-mapped store are those of ``triplanar_aligned`` (this dataset is one, cut into
boxes instead of slices, and shares its store: data/slice_store.py); its slice-only flags (--planes,
--context_slices, --min_foreground, --augment) do not apply and are refused.

Training (``isTrain``): ``--patches_per_subject`` items per subject per epoch, each a box of ``--patch_size``
voxels. With probability ``--foreground_share`` (nnU-Net: 1/3) the box is centred on a body voxel (a random one of
up to 10,000 evenly spaced over the body mask), shifted to stay inside the volume, else placed uniformly at random
inside the volume. Along an axis where the volume is shorter than the patch it is padded as nnU-Net pads, evenly on
both sides, with -1 (air for CT, the darkest MR) and 0 in the mask. Draws come from torch's random generator
(seeded per loader worker and epoch, stored in checkpoints), so a resumed run draws the same boxes.

Testing and validation (not ``isTrain``): one item per subject, the whole volume, unpadded.

``--target_spacing`` (mm) resamples each stored subject once onto that grid (data/resampling.py), into
``grid_<x>x<y>x<z>mm.npy`` beside its ``volumes.npy``; patches and whole volumes are then on that grid.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

from data.resampling import parse_spacing, resample, resampled_shape
from data.slice_store import STORE_FILE
from data.triplanar_aligned_dataset import TriplanarAlignedDataset
from util.checkpoint import atomic_write
from util.disk import writing
from util.mapped import TruncatedFileError, check_whole
from util.parser_flags import add_flag, three_values

VOLUME_GENERATORS = ('unet3d',)     # the --netG names that take (N, C, X, Y, Z) patches
BODY_SAMPLES = 10_000               # body voxels kept per subject to centre foreground patches on
PAD = (-1.0, -1.0, 0.0)             # beyond the volume: modality A, modality B, mask (the store's channels)
SLICE_FLAGS = {'planes': 'xyz', 'context_slices': 0, 'min_foreground': 0.0, 'augment': False}


def parse_patch_size(text: str | int) -> tuple[int, int, int]:
    """``--patch_size``: '64' -> (64, 64, 64); '64x64x32' or '64,64,32' -> (64, 64, 32) voxels along x, y, z."""
    size = three_values(text, int)
    if size is None or min(size) < 1:
        raise ValueError(f'--patch_size {text}: give one positive size in voxels or three (XxYxZ), e.g. 64 or '
                         f'96x96x64')
    return size


def add_patch_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--patch_size and --target_spacing: shared by the dataset and the unet3d generator, which plans its strides
    from them (adding them twice is a no-op)."""
    add_flag(parser, '--patch_size', default='64', help='3D patch in voxels: one size (a cube) or XxYxZ along the '
             'canonical RAS axes x (left-right), y (back-front), z (feet-head); the unet3d generator plans its '
             'strides from it and refuses a size they cannot take, naming the nearest one')
    add_flag(parser, '--target_spacing', default='', help='resample every volume to this voxel size in mm (one '
             'value or x,y,z) before cutting patches, and plan the unet3d generator\'s kernels for it; empty '
             '(default): the native grid, planned as isotropic')
    return parser


def dilate3d(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """(N, 1, X, Y, Z) 0/1 mask grown by ``voxels`` in every direction (a cubic max filter), float."""
    if voxels <= 0:
        return mask.float()
    return F.max_pool3d(mask.float(), 2 * voxels + 1, stride=1, padding=voxels)


def crop(volume: np.ndarray, origin: tuple[int, ...], size: tuple[int, ...], fill: tuple[float, ...]) -> torch.Tensor:
    """The box ``origin`` .. ``origin + size`` of ``volume`` (X, Y, Z, C) as a float tensor (C, *size); voxels
    outside the volume (negative origin, or beyond its end) are channel c's ``fill[c]``."""
    out = torch.tensor(fill, dtype=torch.float32).view(-1, 1, 1, 1).repeat(1, *size)
    lo = [max(0, o) for o in origin]
    hi = [min(n, o + s) for n, o, s in zip(volume.shape[:3], origin, size)]
    if all(h > low for low, h in zip(lo, hi)):
        part = torch.from_numpy(np.array(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], np.float32))
        out[:, lo[0] - origin[0]:hi[0] - origin[0], lo[1] - origin[1]:hi[1] - origin[1],
            lo[2] - origin[2]:hi[2] - origin[2]] = part.permute(3, 0, 1, 2)
    return out


def origin_range(volume: int, patch: int) -> tuple[int, int]:
    """Lowest and highest first voxel of a patch along one axis: inside the volume, or (shorter volume) the one
    placement that pads evenly, the odd voxel after."""
    if volume >= patch:
        return 0, volume - patch
    before = -((patch - volume) // 2)
    return before, before


class Patch3dDataset(TriplanarAlignedDataset):
    """Paired 3D patches (training) or whole volumes (testing). Items: ``A`` (input_nc, X, Y, Z) and ``B``
    (output_nc, X, Y, Z) in [-1, 1] (A the model input after ``--direction``), ``mask`` (1, X, Y, Z) bool body mask
    (grown by ``--body_margin_voxels`` with ``--loss_region body``), ``subject``, ``name``, ``A_paths``,
    ``B_paths``; training items also ``origin`` ((3,) int64, the box's first voxel, negative where padded)."""

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser = TriplanarAlignedDataset.modify_commandline_options(parser, is_train)
        add_patch_options(parser)
        parser.add_argument('--foreground_share', type=float, default=0.33,
                            help='training: the probability that a patch is centred on a body voxel (nnU-Net '
                                 'oversamples foreground in 1/3 of its patches); the others are placed uniformly')
        parser.add_argument('--patches_per_subject', type=int, default=8,
                            help='training: patches drawn from each subject per epoch')
        return parser

    def __init__(self, opt: argparse.Namespace):
        changed = [f'--{k} {getattr(opt, k)}' for k, v in SLICE_FLAGS.items() if getattr(opt, k, v) != v]
        if changed:
            raise ValueError(f'--dataset_mode patch3d cuts 3D patches: {", ".join(changed)} applies to slices only')
        if getattr(opt, 'netG', VOLUME_GENERATORS[0]) not in VOLUME_GENERATORS:
            raise ValueError(f'--dataset_mode patch3d gives 3D patches, which --netG {opt.netG} cannot take; use '
                             f'--model unet3d (--netG {" or ".join(VOLUME_GENERATORS)})')
        if not 0.0 <= opt.foreground_share <= 1.0:
            raise ValueError(f'--foreground_share {opt.foreground_share}: must be between 0 and 1')
        if opt.patches_per_subject < 1:
            raise ValueError(f'--patches_per_subject {opt.patches_per_subject}: must be 1 or more')
        self.patch_size = parse_patch_size(opt.patch_size)
        self.spacing = parse_spacing(opt.target_spacing)
        super().__init__(opt)
        self.patches = bool(opt.isTrain)
        self._grids = {name: self._store_grid(name) for name in self.subjects}
        self._body: dict[str, np.ndarray] = {}      # subject -> (<= BODY_SAMPLES, 3) body voxels, made on first use

    def _store_grid(self, name: str) -> str:
        """The (X, Y, Z, 3) file of subject ``name`` on the training grid: the store itself, or (--target_spacing)
        its resampled copy, made now when missing or damaged (written atomically)."""
        subject = self.subjects[name]
        native = os.path.join(subject.store, STORE_FILE)
        if self.spacing is None:
            return native
        path = os.path.join(subject.store, 'grid_' + 'x'.join(f'{s:g}' for s in self.spacing) + 'mm.npy')
        try:
            check_whole(path, np.load(path, mmap_mode='r'))
            return path
        except (OSError, ValueError):
            pass
        stored = np.load(native, mmap_mode='r')
        shape = resampled_shape(stored.shape[:3], subject.geometry.zooms, self.spacing)
        channels = torch.from_numpy(np.ascontiguousarray(np.moveaxis(stored, -1, 0))).float()
        grid = torch.cat([resample(channels[:2], shape, 'trilinear'), resample(channels[2:], shape, 'nearest')])
        array = grid.permute(1, 2, 3, 0).numpy().astype(stored.dtype)
        with writing(path):
            atomic_write(lambda f: np.save(f, array), path)
        return path

    def volumes(self, name: str) -> np.ndarray:
        """Memory-mapped (X, Y, Z, 3) of subject ``name`` on the training grid (see the module docstring): modality
        A, modality B in [-1, 1] and the body mask; a file shortened while this run reads it is a RuntimeError."""
        try:
            return self._maps.get(self._grids[name])
        except TruncatedFileError as exc:
            raise RuntimeError(f'store of subject {name}: {exc} (changed while this run read it); run again and it '
                               f'is stored anew') from None

    def native_arrays(self, name: str) -> dict[str, np.ndarray]:
        """:meth:`arrays` on the subject's own voxel grid (the slice store's), on which test.py scores whatever
        grid --target_spacing trained on."""
        return self.views(super().volumes(name))

    def __len__(self) -> int:
        return len(self.subjects) * (self.opt.patches_per_subject if self.patches else 1)

    def body_voxels(self, name: str) -> np.ndarray:
        """(K, 3) int64 voxels of subject ``name``'s body mask on the training grid: all of them, or BODY_SAMPLES
        evenly spaced ones in C order."""
        if name not in self._body:
            where = np.flatnonzero(np.asarray(self.volumes(name)[..., 2]).reshape(-1) > 0.5)
            if len(where) > BODY_SAMPLES:
                where = where[np.linspace(0, len(where) - 1, BODY_SAMPLES).round().astype(np.int64)]
            self._body[name] = np.stack(np.unravel_index(where, self.volumes(name).shape[:3]), 1)
        return self._body[name]

    def draw_origin(self, name: str) -> tuple[int, int, int]:
        """A random first voxel of a training patch of subject ``name`` (see the module docstring)."""
        shape = self.volumes(name).shape[:3]
        ranges = [origin_range(n, p) for n, p in zip(shape, self.patch_size)]
        body = self.body_voxels(name)
        if float(torch.rand(())) < self.opt.foreground_share and len(body):     # (a body resampled away: uniform)
            centre = body[int(torch.randint(len(body), ()))]
            return tuple(int(np.clip(c - p // 2, lo, hi)) for c, p, (lo, hi) in zip(centre, self.patch_size, ranges))
        return tuple(int(torch.randint(lo, hi + 1, ())) for lo, hi in ranges)

    def __getitem__(self, i: int) -> dict:
        name = self._names[i // self.opt.patches_per_subject if self.patches else i]
        volume = self.volumes(name)
        if self.patches:
            origin = self.draw_origin(name)
            size = self.patch_size
        else:
            origin, size = (0, 0, 0), tuple(volume.shape[:3])
        src, tgt, _ = self._order
        m = self.margin
        box = crop(volume, origin, size, PAD)
        if m:        # grow the mask with what lies within m voxels outside the box too
            grown = crop(volume[..., 2:], tuple(o - m for o in origin), tuple(s + 2 * m for s in size), (0.0,))
            box[2] = dilate3d(grown[None], m)[0, 0, m:-m, m:-m, m:-m]
        subject = self.subjects[name]
        item = {'A': box[src:src + 1].expand(self.opt.input_nc, -1, -1, -1),
                'B': box[tgt:tgt + 1].expand(self.opt.output_nc, -1, -1, -1),
                'mask': box[2:3] > 0.5, 'subject': name, 'name': name,
                'A_paths': subject.paths[self.source], 'B_paths': subject.paths[self.target]}
        if self.patches:
            item['origin'] = torch.tensor(origin, dtype=torch.int64)
        return item
