"""Paired 3D volumes cut into 2D slices along x, y and z (the paper's triplanar slicing, section IV-A).

Layouts (data/layouts.py), one folder per subject under ``--dataroot``:

- SynthRAD2023 Task 1: ``<subject>/mr.nii.gz``, ``ct.nii.gz`` and optionally ``mask.nii.gz`` (A = MR, B = CT);
- SynthRAD2025 and SynthRAD2023 Task 2: ``<subject>/mr.mha`` (or ``cbct.mha`` with ``--modality_A cbct``),
  ``ct.mha``, ``mask.mha``;
- BraTS 2018-2021: ``<subject>/<subject>_{flair,t1,t1ce,t2}.nii[.gz]``; ``--modality_A flair --modality_B t2``;
- BraTS 2023+: ``<subject>/<subject>-{t1n,t1c,t2w,t2f}.nii.gz``; ``--modality_A t2f --modality_B t2w``.

Files may be NIfTI, MetaImage, NRRD or a DICOM series folder (util/image_io.py); a ``mask`` file, when present, is
the body mask (otherwise one is computed). ``--direction BtoA`` swaps A and B. Without ``--dataroot`` the demo
dataset ``./datasets/demo_synthrad`` (``demo_brats`` for BraTS modalities) is used and made on first use.

Each subject is read, checked, reoriented to RAS and normalised to [-1, 1] once, into a slice store
``<cache_dir>/triplanar_<key>/<subject>/`` (``volumes.npy``: canonical (X, Y, Z, 3) array of modality A, modality B
and body mask, interleaved so that one strided read gives all three slices; ``meta.json``; data/slice_store.py)
that later runs reuse; items are memory-mapped slices resized with torch. Splits are per subject:
``<dataroot>/splits/<phase>.txt``, made 8:1:1 with ``--split_seed`` when there are none (kept in the experiment
folder when the dataroot is read-only); ``--split all`` takes every subject.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch

from data.augmentation import augment
from data.base_dataset import BaseDataset
from data.context import check_context, context_stack
from data.layouts import BRATS_MODALITIES
from data.slice_store import STORE_FILE, StoreSettings, Subject, load_subject
from data.splits import ALL_SPLIT, fold_split, list_subjects, load_split
from util.body_mask import dilate
from util.direction import source_target
from util.disk import WriteError, cannot_write
from util.intensity import CT_WINDOW, MR_PERCENTILES
from util.mapped import MappedFiles, TruncatedFileError
from util.slicing import PLANES, RESIZE_MODES, slice_spacing, take_slice, to_square

DEMO_ROOTS = {'synthrad': os.path.join('datasets', 'demo_synthrad'), 'brats': os.path.join('datasets', 'demo_brats')}


class TriplanarAlignedDataset(BaseDataset):
    """Paired slices of co-registered volumes. Items: ``A``, ``B`` (FloatTensor (C, size, size) in [-1, 1], A the
    model input after ``--direction``), ``A_paths``/``B_paths`` (source NIfTI files), ``name``
    (``<subject>_<plane><index>``), ``subject``, ``plane`` ('x', 'y' or 'z'), ``slice_index`` and ``mask``
    ((1, size, size) bool body mask), which is what :class:`evaluation.scoring.VolumeEvaluator` needs."""

    volumetric = True

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser.add_argument('--modality_A', default='mr', help='modality name of A: file <name>.nii[.gz] or '
                            '<subject>_<name>.nii[.gz]; "ct" is read in HU, any other name as MR')
        parser.add_argument('--modality_B', default='ct', help='modality name of B (see --modality_A)')
        parser.add_argument('--planes', default='xyz', help='slice along these axes: any of x (sagittal), '
                            'y (coronal), z (axial)')
        parser.add_argument('--min_foreground', type=float, default=0.0,
                            help='skip slices whose body-mask fraction is below this; 0 (default) uses every slice, '
                                 'as the paper does (its Table I counts), e.g. 0.05 trains on fewer near-empty '
                                 'slices. Test and validation always use every slice')
        parser.add_argument('--page_slices', type=int, default=5,
                            help='test: slices of each subject and plane shown on the result page, evenly spaced '
                                 'through the body (the central one included when odd); 0 shows every slice. '
                                 'Volumes and metrics always use every slice')
        parser.add_argument('--fuse', default='mean', choices=['mean', 'median'],
                            help='how test.py fuses the per-plane volumes')
        parser.add_argument('--split', default='', help=f'subjects to use: the split <dataroot>/splits/<name>.txt '
                            f'(default: --phase), or "{ALL_SPLIT}" for every subject folder of --dataroot')
        parser.add_argument('--split_seed', type=int, default=2024,
                            help='seed of the 8:1:1 subject split made when <dataroot>/splits/ has none')
        parser.add_argument('--skip_bad_subjects', action='store_true',
                            help='leave out (and list) subjects that cannot be read instead of stopping')
        parser.add_argument('--ct_window', type=float, nargs=2, default=list(CT_WINDOW), metavar=('LOW', 'HIGH'),
                            help='HU window of CT mapped to [-1, 1]')
        parser.add_argument('--mr_percentiles', type=float, nargs=2, default=list(MR_PERCENTILES),
                            metavar=('LOW', 'HIGH'), help='body percentiles of each MR volume mapped to [-1, 1]')
        parser.add_argument('--affine_tol', type=float, default=1e-3,
                            help='largest difference (mm) between the affines of a subject\'s files')
        parser.add_argument('--cache_dir', default='', help='folder of the slice store (default <dataroot>/.cache)')
        parser.add_argument('--cache_dtype', default='float16', choices=['float16', 'float32'],
                            help='precision of the slice store (float16: < 1 HU for CT)')
        parser.add_argument('--open_volumes', type=int, default=16,
                            help='stored subjects each loader worker keeps memory-mapped')
        parser.add_argument('--augment', action='store_true', help='training only: random flips (unless '
                            '--no_flip) and small affine transforms, the same for A, B and mask')
        parser.add_argument('--context_slices', type=int, default=0, metavar='K',
                            help='2.5D input: the slice and its K neighbours on each side along the slicing axis as '
                                 '2K+1 input channels (--input_nc becomes 2K+1; volume edges replicate; every plane). '
                                 'MRNet\'s SAM sees the slice and its nearest neighbours as RGB. 0 (default): the '
                                 'grey slice repeated, as the paper does')
        parser.add_argument('--n_folds', type=int, default=0, metavar='K',
                            help='cross-validation: split the non-test subjects (train + val of splits/) into K '
                                 'per-subject folds, deterministic (--split_seed); --fold i validates on fold i and '
                                 'trains on the others. The test split never changes. 0 (default): splits/ as is')
        parser.add_argument('--fold', type=int, default=0, metavar='I', help='with --n_folds K: the fold 0..K-1 '
                            'held out for validation')
        parser.set_defaults(preprocess='resize')
        return parser

    def __init__(self, opt: argparse.Namespace):
        super().__init__(opt)
        self.root = opt.dataroot = resolve_dataroot(opt)
        if opt.preprocess not in RESIZE_MODES:
            raise ValueError(f'--dataset_mode triplanar_aligned supports --preprocess {" or ".join(RESIZE_MODES)} '
                             f'(got {opt.preprocess})')
        if opt.modality_A == opt.modality_B:
            raise ValueError(f'--modality_A and --modality_B are both "{opt.modality_A}"')
        self.mode, self.size = opt.preprocess, opt.crop_size
        self.planes = parse_planes(opt.planes)
        self.source, self.target = source_target(opt)
        self.augment = bool(opt.isTrain and opt.augment)
        settings = StoreSettings((opt.modality_A, opt.modality_B), tuple(opt.ct_window), tuple(opt.mr_percentiles),
                                 opt.cache_dtype, opt.affine_tol)
        cache = opt.cache_dir or os.path.join(self.root, '.cache')
        self.store_root = os.path.join(cache, f'triplanar_{settings.key()}')
        self.split = opt.split or opt.phase
        subjects = list_subjects(self.root)
        fallback = os.path.join(opt.checkpoints_dir, opt.name.split(',')[0])
        names = load_split(self.root, self.split, subjects, opt.split_seed, fallback=fallback)
        if opt.n_folds and self.split in ('train', 'val'):
            pool = sorted(load_split(self.root, 'train', subjects, opt.split_seed, fallback) +
                          load_split(self.root, 'val', subjects, opt.split_seed, fallback))
            names = fold_split(pool, opt.n_folds, opt.fold, opt.split_seed)[self.split]
        self.subjects, self.skipped = self._load_subjects(names, settings)
        self.context = opt.context_slices
        # --loss_region body --body_margin_voxels V: the items' body mask grown by V voxels (models/losses/body_loss.py;
        # options of the pix2pix and MRNet training parsers only, absent for other models and in testing)
        self.margin = getattr(opt, 'body_margin_voxels', 0)
        if self.margin < 0:
            raise ValueError(f'--body_margin_voxels {self.margin}: must be 0 or more')
        if getattr(opt, 'loss_region', 'slice') != 'body':
            self.margin = 0
        check_context(self.context, {n: (s.paths[self.source], s.geometry.canonical_shape)
                                     for n, s in self.subjects.items()})
        self.index = self._make_index(opt.min_foreground)
        if len(self.index) == 0:
            raise ValueError(f'{self.root}: no slice of the {self.split} split reaches --min_foreground '
                             f'{opt.min_foreground}')
        self._names = list(self.subjects)
        channels = [opt.modality_A, opt.modality_B]
        self._order = [channels.index(self.source), channels.index(self.target), 2]   # source, target, mask
        self._maps = MappedFiles(opt.open_volumes)     # each worker keeps its own (util/mapped.py)
        self.sam_features = None            # the input slices' cached SAM features: see use_sam_features
        self.sam_target_features = None     # the target slices' (--lambda_sam_perceptual)

    def _load_subjects(self, names: list[str], settings: StoreSettings) -> tuple[dict[str, Subject], dict[str, str]]:
        """Stored (or newly stored) subjects, and with --skip_bad_subjects the refused ones with the reason."""
        subjects, skipped = {}, {}
        for name in names:
            try:
                subjects[name] = load_subject(self.root, name, settings, os.path.join(self.store_root, name))
            except (FileNotFoundError, ValueError) as e:
                if not self.opt.skip_bad_subjects:
                    raise
                skipped[name] = str(e)
            except (OSError, WriteError) as e:
                if not cannot_write(e):
                    raise
                raise RuntimeError(f'cannot write the slice store under {self.store_root} ({e}); '
                                   f'pass --cache_dir with a writable folder') from None
        if skipped:
            print(f'--skip_bad_subjects: skipped {len(skipped)} subject(s):\n' +
                  '\n'.join(f'  {n}: {why}' for n, why in skipped.items()), file=sys.stderr)
        if not subjects:
            raise ValueError(f'{self.root}: no usable subjects in the {self.split} split')
        return subjects, skipped

    def _make_index(self, min_foreground: float) -> np.ndarray:
        """(N, 3) int array of (subject number, axis, slice index), subject by subject, plane by plane."""
        rows = [(s, PLANES[p], i) for s, subject in enumerate(self.subjects.values()) for p in self.planes
                for i, f in enumerate(subject.foreground[p]) if f >= min_foreground]
        return np.asarray(rows, np.int32).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.index)

    def volumes(self, name: str) -> np.ndarray:
        """Memory-mapped canonical (X, Y, Z, 3) store of subject ``name``: modality_A, modality_B in [-1, 1] and
        the body mask (0/1); each worker keeps the last ``--open_volumes`` subjects open. A store file shortened
        while this run reads it is a RuntimeError naming it (it is rebuilt by the next run), never a SIGBUS."""
        path = os.path.join(self.subjects[name].store, STORE_FILE)
        try:
            return self._maps.get(path)
        except TruncatedFileError as exc:
            raise RuntimeError(f'slice store of subject {name}: {exc} (changed while this run read it); run again '
                               f'and it is stored anew') from None

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """Canonical (X, Y, Z) views of subject ``name``: source and target modality in [-1, 1], 'mask' (0/1)."""
        return self.views(self.volumes(name))

    def views(self, v: np.ndarray) -> dict[str, np.ndarray]:
        """The named channels of a stored (X, Y, Z, 3) array: source, target, 'mask'."""
        return {self.source: v[..., self._order[0]], self.target: v[..., self._order[1]], 'mask': v[..., 2]}

    def slice_counts(self) -> dict[str, dict[str, int]]:
        """How many slices of each subject and plane the dataset holds."""
        counts: dict[str, dict[str, int]] = {n: {} for n in self.subjects}
        for s, axis, _ in self.index:
            plane = 'xyz'[axis]
            name = self._names[s]
            counts[name][plane] = counts[name].get(plane, 0) + 1
        return counts

    def sam_cache_spec(self, field: str = 'A') -> dict:
        """What an item's ``field`` slice (``A``, the input; ``B``, the target, for the SAM perceptual loss)
        depends on, for the SAM feature cache (data/sam_cache.py): the folder it goes next to, the slice store's
        key, the modality, size and resizing, and for a 2.5D input (--context_slices K > 0) K; one fingerprint per
        subject (source files, geometry, intensity map)."""
        def fingerprint(subject: Subject) -> str:
            return hashlib.sha1(json.dumps(subject.to_json(), sort_keys=True).encode()).hexdigest()[:16]
        slices = {'store': os.path.basename(self.store_root), 'source': self.source if field == 'A' else self.target,
                  'size': self.size, 'preprocess': self.mode}
        if field == 'A' and self.context:
            slices['context'] = self.context        # absent for K = 0: the paper's caches keep their key
        return {'root': os.path.dirname(self.store_root), 'slices': slices,
                'subjects': {name: fingerprint(s) for name, s in self.subjects.items()}}

    def use_sam_features(self, field: str, reader) -> None:
        """Read the cached SAM feature of each item's ``field`` slice (``A``, the input; ``B``, the target) from
        ``reader`` from now on, or none with None. ``reader``: a :class:`data.sam_cache.CachedFeatures` built for
        :meth:`sam_cache_spec` of ``field``, with ``read((subject, plane, index))`` -> (feature (256, S/16, S/16)
        tensor, cached bool); items then hold ``sam_feature``/``sam_cached`` (``A``) or
        ``sam_target_feature``/``sam_target_cached`` (``B``). The cache's ``prepare`` calls this."""
        if field == 'A':
            self.sam_features = reader
        elif field == 'B':
            self.sam_target_features = reader
        else:
            raise ValueError(f'use_sam_features: field {field!r} is not A or B')

    def slice_key(self, i: int) -> tuple[str, str, int]:
        """(subject, plane, slice index) of item ``i``."""
        s, axis, index = (int(v) for v in self.index[i])
        return self._names[s], 'xyz'[axis], index

    def __getitem__(self, i: int) -> dict:
        s, axis, index = (int(v) for v in self.index[i])
        name = self._names[s]
        subject = self.subjects[name]
        volume = self.volumes(name)
        # (3, h, w): modality A, modality B, mask; float16 -> float32 in torch, several times faster than numpy
        stack = torch.from_numpy(take_slice(volume, axis, index)).float()
        src, tgt, _ = self._order
        if self.margin:         # grow the body mask on the voxel grid, before resizing
            stack[2] = dilate(stack[None, None, 2], self.margin)[0, 0]
        if self.context:        # + the 2K+1 source slices i-K..i+K (edges replicated) as channels 3..
            stack = torch.cat([stack, torch.from_numpy(context_stack(volume[..., src], axis, index,
                                                                     self.context)).float()])
        x = to_square(stack, slice_spacing(subject.geometry.zooms, axis), self.size, self.mode, fill=-1.0)
        if self.augment:
            x = augment(x, flip=not self.opt.no_flip)
        plane = 'xyz'[axis]
        item = {} if self.sam_features is None else dict(zip(('sam_feature', 'sam_cached'),
                                                              self.sam_features.read((name, plane, index))))
        if self.sam_target_features is not None:
            item.update(zip(('sam_target_feature', 'sam_target_cached'),
                            self.sam_target_features.read((name, plane, index))))
        source = x[3:] if self.context else x[src:src + 1].expand(self.opt.input_nc, -1, -1)
        return {**item, 'A': source,
                'B': x[tgt:tgt + 1].expand(self.opt.output_nc, -1, -1),
                'A_paths': subject.paths[self.source], 'B_paths': subject.paths[self.target],
                'name': f'{name}_{plane}{index:03d}', 'subject': name, 'plane': plane, 'slice_index': index,
                'mask': x[2:3] > 0.5}


def parse_planes(planes: str) -> list[str]:
    """'xyz', 'z', 'xz'... -> list of planes in x, y, z order."""
    chosen = [p for p in PLANES if p in planes]
    if not planes or len(set(planes)) != len(planes) or len(chosen) != len(planes):
        raise ValueError(f'--planes "{planes}": use one or more of x, y, z, each once')
    return chosen


def resolve_dataroot(opt: argparse.Namespace) -> str:
    """``--dataroot``, or the demo dataset (made now if missing): demo_brats for BraTS modalities, else
    demo_synthrad."""
    if opt.dataroot:
        return opt.dataroot
    kind = 'brats' if {opt.modality_A, opt.modality_B} <= set(BRATS_MODALITIES) else 'synthrad'
    from .demo_data import ensure_demo_dataset
    return ensure_demo_dataset(DEMO_ROOTS[kind], kind)

