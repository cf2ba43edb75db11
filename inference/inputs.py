"""What to synthesise from: files, DICOM series and subject folders found from the paths a user gives, their masks,
and the checks that an input is the modality the generator was trained on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from data.layouts import MASK_NAME, find_modality, find_subject_file
from inference.export.handoff import DICOM_FORMAT
from util.geometry import Geometry
from util.image_io import IMAGE_EXTENSIONS, choose_series, dicom_series, image_extension, image_stem
from util.mask_file import read_mask_on_grid

MR_LOOKS_LIKE_CT = -500.0                 # an MR input whose 1st percentile is below this looks like CT in HU


@dataclass(frozen=True)
class VolumeInput:
    """One volume to synthesise from: a file or DICOM folder, the name its outputs get, its mask file (a subject
    folder's ``mask``) and the extension of its outputs (the input's format; ``dicom`` for a DICOM series)."""
    name: str
    path: str
    series: str | None = None
    mask: str | None = None
    ext: str = '.nii.gz'


def _dicom_input(name: str, folder: str, series: str | None, mask: str | None = None) -> VolumeInput:
    choose_series(folder, dicom_series(folder), series)      # several series and none chosen: refused now
    return VolumeInput(name, folder, series, mask, DICOM_FORMAT)


def _folder_inputs(folder: str, modality: str, series: str | None, top: bool) -> list[VolumeInput]:
    """A subject folder (any layout), a DICOM series folder, or (at the top level only) a folder of files and
    such folders."""
    name = os.path.basename(os.path.normpath(folder))
    source = find_modality(folder, name, modality)
    if source is not None:
        mask = find_modality(folder, name, MASK_NAME)
        if os.path.isdir(source):
            return [_dicom_input(name, source, series, mask)]
        return [VolumeInput(name, source, None, mask, image_extension(source))]
    if dicom_series(folder):
        return [_dicom_input(name, folder, series)]
    if not top:
        return []
    items = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.startswith('.') or entry == 'splits':
            continue
        if os.path.isfile(path) and image_extension(path):
            items.append(VolumeInput(image_stem(path), path, None, None, image_extension(path)))
        elif os.path.isdir(path):
            items += _folder_inputs(path, modality, series, top=False)
    return items


def find_inputs(paths: list[str], modality: str, series: str | None = None) -> list[VolumeInput]:
    """The volumes named by ``paths``: files (NIfTI, MetaImage, NRRD), DICOM series folders, subject folders in any
    layout (modality ``modality`` and its ``mask``), or folders of these. Errors name the path: missing, an
    unsupported file, a folder with nothing to read, several DICOM series without ``series``, two inputs with the
    same name."""
    found: list[VolumeInput] = []
    for path in paths:
        if os.path.isfile(path):
            ext = image_extension(path)
            if ext is None:
                raise ValueError(f'--input {path}: unsupported file type; expected {" ".join(IMAGE_EXTENSIONS)} or a '
                                 f'folder (DICOM series, subject folder or a folder of these)')
            found.append(VolumeInput(image_stem(path), path, None, None, ext))
        elif os.path.isdir(path):
            items = _folder_inputs(path, modality, series, top=True)
            if not items:
                raise FileNotFoundError(f'--input {path}: no volume found in this folder (expected image files '
                                        f'{" ".join(IMAGE_EXTENSIONS)}, a DICOM series, or subject folders holding '
                                        f'"{modality}")')
            found += items
        else:
            raise FileNotFoundError(f'--input {path}: no such file or folder')
    names: dict[str, str] = {}
    for item in found:
        if item.name in names:
            raise ValueError(f'two inputs would write outputs of the same name "{item.name}": {names[item.name]} and '
                             f'{item.path}; give them separately with distinct --output files')
        names[item.name] = item.path
    return found


def modality_warning(data: np.ndarray, kind: str, label: str, modality: str) -> str | None:
    """Why a volume looks like the wrong modality for the model's input ``kind``, or None."""
    low = float(np.percentile(data, 1))
    if kind == 'mr' and low < MR_LOOKS_LIKE_CT:
        share = float(np.mean(data < MR_LOOKS_LIKE_CT))
        return (f'{label}: {share:.0%} of the voxels are below {MR_LOOKS_LIKE_CT:g}, as in a CT in Hounsfield units, '
                f'but this model reads {modality} (MR); is this the right input?')
    if kind == 'ct' and float(data.min()) >= 0:
        return (f'{label}: no voxel is below 0, but a CT in Hounsfield units has air near -1000; this looks like an '
                f'MR (or a CT without its rescale slope and intercept), while this model reads {modality} (CT)')
    return None


def read_mask(path: str, geometry: Geometry, image_path: str, tol: float) -> np.ndarray:
    """A mask file on ``geometry``'s grid as a canonical bool array; ValueError when its grid differs or it is
    empty."""
    mask = geometry.to_canonical(read_mask_on_grid(
        path, geometry, tol, lambda why: f'mask {path} is not on the voxel grid of {image_path}: {why}'))
    if not mask.any():
        raise ValueError(f'mask {path} is empty')
    return mask


def mask_for(item: VolumeInput, mask: str | None, n_inputs: int) -> str | None:
    """The mask file of ``item`` from --mask (a file for a single input, or a folder with ``<name>/mask.<ext>`` or
    ``<name>.<ext>``); None without --mask."""
    if mask is None:
        return None
    if os.path.isfile(mask):
        if n_inputs != 1:
            raise ValueError(f'--mask {mask} is one file but there are {n_inputs} input volumes; give a folder of '
                             f'masks (<name>/mask.<ext> or <name>.<ext>)')
        return mask
    if not os.path.isdir(mask):
        raise FileNotFoundError(f'--mask {mask}: no such file or folder')
    found = find_subject_file(mask, item.name, MASK_NAME)
    if found is None:
        raise FileNotFoundError(f'--mask {mask}: no mask for {item.name} (looked for {item.name}/mask.<ext> and '
                                f'{item.name}.<ext>)')
    return found
