"""A synthetic volume written in the input's own format and exact geometry: NIfTI through nibabel, MetaImage
(``.mha``/``.mhd``) and NRRD through SimpleITK, as float32 (HU for CT).

Writing goes to a temporary folder beside the destination, renamed over the target when complete: a crash leaves
the old file or the new one, never half a file (a ``.mhd``'s data file is renamed before its header).
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from util.disk import writing
from util.image_io import NIFTI_EXTENSIONS, simpleitk, affine_to_itk, image_extension
from util.nifti import save_nifti
from util.whole_folder import scratch_folder

WRITABLE_EXTENSIONS = NIFTI_EXTENSIONS + ('.mha', '.mhd', '.nrrd')


def write_image(data: np.ndarray, reference: nib.Nifti1Image, path: str) -> None:
    """Write ``data`` (the reference's voxel order and shape) as float32 at the reference's exact geometry, in the
    format of ``path``'s extension (NIfTI, .mha, .mhd, .nrrd), atomically."""
    ext = image_extension(path)
    if ext not in WRITABLE_EXTENSIONS:
        raise ValueError(f'{path}: cannot write this format; use one of {", ".join(WRITABLE_EXTENSIONS)}')
    if tuple(data.shape) != tuple(reference.shape[:3]):
        raise ValueError(f'{path}: data shape {data.shape} differs from the reference shape {reference.shape[:3]}')
    folder = os.path.dirname(os.path.abspath(path))
    # a full or read-only disk: util.disk.WriteError, no temporary file left; a killed write's folder is removed by
    # the next write of the same file (util/whole_folder.py)
    with writing(path), scratch_folder(path) as tmp_dir:
        tmp = os.path.join(tmp_dir, os.path.basename(path))
        if ext in NIFTI_EXTENSIONS:
            save_nifti(data, reference, tmp)
        else:
            _write_itk(data, reference.affine, tmp)
        for name in sorted(os.listdir(tmp_dir), key=lambda n: n == os.path.basename(path)):
            os.replace(os.path.join(tmp_dir, name), os.path.join(folder, name))   # a .mhd's data file first


def _write_itk(data: np.ndarray, affine: np.ndarray, path: str) -> None:
    sitk = simpleitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose(2, 1, 0)))
    origin, spacing, direction = affine_to_itk(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    sitk.WriteImage(image, path, True)
