"""NIfTI reading with checks (finite values, a usable affine, whole files) and writing with the source geometry,
through nibabel. Arrays are in the file's own orientation; util.geometry takes them to canonical RAS and back.
"""
from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError


def load_nifti(path: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a 3D NIfTI file (``.nii`` or ``.nii.gz``): float32 data (X, Y, Z) as stored, and the image.

    Trailing axes of length 1 are dropped. Raises FileNotFoundError for a missing file and ValueError naming the
    file for anything else: not NIfTI, truncated or corrupt, not 3D, NaN or Inf voxels.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: file not found')
    try:
        img = nib.load(path)
    except (ImageFileError, gzip.BadGzipFile) as e:
        raise ValueError(f'{path}: not a NIfTI file ({e})') from None
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f'{path}: cannot be read as NIfTI, truncated or corrupt ({e})') from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f'{path}: not a NIfTI file (read as {type(img).__name__})')
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ValueError(f'{path}: expected a 3D volume, got shape {tuple(img.shape)} ({len(img.shape)}D)')
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise ValueError(f'{path}: truncated or corrupt image data ({e})') from None
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f'{path}: {bad} voxels are NaN or Inf')
    return data, img


def save_nifti(data: np.ndarray, reference: nib.Nifti1Image, path: str) -> None:
    """Write ``data`` (source orientation, the reference's shape) as float32 NIfTI with the reference's affine,
    qform/sform codes and units, so the volume lands exactly where the reference was."""
    if tuple(data.shape) != tuple(reference.shape[:3]):
        raise ValueError(f'{path}: data shape {data.shape} differs from the reference shape {reference.shape[:3]}')
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(type(reference)(np.asarray(data, np.float32), reference.affine, header=header), path)
