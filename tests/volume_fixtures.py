"""Helpers for the volume tests: a tiny paired head phantom written in either layout and orientation, and
triplanar_aligned options from the real parsers."""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from options.test_options import TestOptions
from options.train_options import TrainOptions
from data.splits import write_splits
from data.demo_data import orient_as

SHAPE = (12, 14, 10)          # canonical RAS voxels: small enough for fast tests, big enough for a 7-voxel SSIM


def phantom(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical (RAS) volumes of an ellipsoid 'head': 'ct' in HU (air -1000, tissue ~40 with a gradient, a bone
    shell ~1000 under the skin), 'mr' (tissue 300-700, bone and air dark), 'mask' (the body, uint8)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing='ij')
    r = np.sqrt(sum((g / 0.85) ** 2 for g in grids))
    body, bone = r < 1, (r > 0.65) & (r < 0.85)
    ct = np.where(body, 40 + 30 * grids[0] + rng.normal(0, 5, shape), -1000.0)
    ct = np.where(bone, 1000 + 100 * grids[2], ct)
    mr = np.where(body & ~bone, 500 + 200 * grids[1] + rng.normal(0, 10, shape), 20 + rng.normal(0, 2, shape))
    return {'ct': np.round(ct).astype(np.float32), 'mr': mr.astype(np.float32), 'mask': body.astype(np.uint8)}


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, dtype=np.float32) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), np.eye(4) if affine is None else affine), str(path))
    return path


def write_subject(root: Path, name: str, volumes: dict[str, np.ndarray] | None = None,
                  spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), axcodes: str = 'RAS',
                  brats: bool = False, ext: str = '.nii.gz') -> Path:
    """Write canonical ``volumes`` (default: :func:`phantom`) for one subject stored in ``axcodes`` orientation,
    as ``<name>/<modality><ext>`` (SynthRAD) or ``<name>/<name>_<modality><ext>`` (BraTS). Returns the folder."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for modality, canonical in (phantom() if volumes is None else volumes).items():
        data, affine = orient_as(canonical, spacing, axcodes)
        stem = f'{name}_{modality}' if brats else modality
        write_nifti(folder / f'{stem}{ext}', data, affine)
    return folder


def make_opt(root: Path | None, *args: str, train: bool = True, checkpoints: Path | None = None) -> argparse.Namespace:
    """Options of ``--dataset_mode triplanar_aligned`` from the real train/test parser (CPU, crop 32);
    checkpoints go next to ``root``, not into it (a folder there would be a subject)."""
    base = ['--dataset_mode', 'triplanar_aligned', '--crop_size', '32', '--gpu_ids', '-1', '--model', 'pix2pix',
            '--checkpoints_dir', str(checkpoints or (root or Path('.')).parent / 'checkpoints')]
    if root is not None:
        base += ['--dataroot', str(root)]
    return (TrainOptions() if train else TestOptions()).parse([*base, *args], setup_device=False)


def synthrad_root(tmp_path: Path) -> Path:
    """``tmp_path/data`` with SynthRAD subjects 'ras' and 'lps' (LPS, 1 x 1 x 2.5 mm) in train, 'other' in test."""
    data = tmp_path / 'data'
    write_subject(data, 'ras')
    write_subject(data, 'lps', spacing=(1.0, 1.0, 2.5), axcodes='LPS')
    write_subject(data, 'other', volumes=phantom(seed=5), spacing=(1.0, 1.0, 2.5), axcodes='LPS')
    write_splits(str(data), {'train': ['lps', 'ras'], 'test': ['other']})
    return data
