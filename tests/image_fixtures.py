"""Helpers for the format tests: volumes with known world coordinates written as NIfTI (nibabel), MetaImage, NRRD
(SimpleITK) and as a DICOM series (one file per slice, the tags a scanner writes)."""
from __future__ import annotations

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# an oblique-free but permuted and flipped LPS direction: index i runs along -y, j along +x, k along +z
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
ORIGIN = (-20.5, 31.25, -7.0)
SPACING = (0.8, 1.1, 2.5)


def itk_volume(data: np.ndarray, origin=ORIGIN, spacing=SPACING, direction=DIRECTION) -> sitk.Image:
    """A SimpleITK image of ``data`` indexed (i, j, k) (SimpleITK stores (k, j, i))."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def world_ras(image: sitk.Image, index: tuple[int, int, int]) -> np.ndarray:
    """RAS+ millimetres of voxel ``index`` as ITK places it (its LPS point, x and y negated)."""
    return LPS_TO_RAS @ np.asarray(image.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)))


def write_itk(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def write_nifti_like(path: Path, image: sitk.Image) -> Path:
    """The same volume as NIfTI through nibabel: affine = RAS+ of ITK's geometry, written independently."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin())
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


# the patient, study and frame-of-reference tags of the test MR (what a synthetic CT must copy)
PATIENT_STUDY_TAGS = {'0010|0010': 'Doe^Jane', '0010|0020': 'PAT-0042', '0010|0030': '19610203', '0010|0040': 'F',
                      '0008|0020': '20260115', '0008|0030': '101500', '0020|0010': 'ST17', '0008|0050': 'ACC-991',
                      '0008|0090': 'House^Greg', '0020|0052': '1.2.826.0.1.3680043.2.1125.9.7',
                      '0018|5100': 'HFS', '0020|0011': '3'}
STUDY_UID = '1.2.826.0.1.3680043.2.1125.2'


def lr_phantom(shape=(12, 14, 10), left_j: int = 11) -> np.ndarray:
    """An int-valued MR-like phantom (i, j, k) for the DIRECTION above: a body ellipsoid of 200 with a bright
    marker (900) at index j = ``left_j`` only, i.e. on the patient's left (j runs along LPS +x, the patient's
    left), nothing mirrored on the right."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing='ij')
    centre = (np.asarray(shape) - 1) / 2
    body = (((i - centre[0]) / (shape[0] / 2.2)) ** 2 + ((j - centre[1]) / (shape[1] / 2.2)) ** 2
            + ((k - centre[2]) / (shape[2] / 1.8)) ** 2) <= 1
    data = np.where(body, 200.0, 0.0)
    data[int(centre[0]) - 1:int(centre[0]) + 2, left_j, int(centre[2]) - 1:int(centre[2]) + 2] = 900.0
    return data


def write_dicom_series(folder: Path, image: sitk.Image, series_uid: str = '1.2.826.0.1.3680043.2.1125.1',
                       modality: str = 'MR', description: str = 'T1 test', tags: dict | None = None) -> Path:
    """One DICOM file per k-slice of ``image`` (cast to int16) with position, orientation, spacing, series,
    patient, study and frame-of-reference tags (PATIENT_STUDY_TAGS, updated by ``tags``), as the SimpleITK
    series-writing recipe does. GDCM's writer switches the process locale to "C" (ASCII text files from then
    on); the locale is put back."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(folder, image, series_uid, modality, description,
                                   {**PATIENT_STUDY_TAGS, **(tags or {})})
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(folder: Path, image: sitk.Image, series_uid: str, modality: str, description: str,
                        extra: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        tags = {'0008|0060': modality, '0008|103e': description, '0020|000e': series_uid,
                '0020|000d': STUDY_UID, '0008|0016': '1.2.840.10008.5.1.4.1.1.4',
                '0008|0018': f'{series_uid}.{k + 1}', '0020|0013': str(k + 1),
                '0020|0032': '\\'.join(f'{v:.6f}' for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
                '0020|0037': '\\'.join(f'{v:.6f}' for v in (direction[0], direction[3], direction[6],
                                                             direction[1], direction[4], direction[7])),
                '0018|0050': f'{image.GetSpacing()[2]:.6f}', '0028|0030': f'{image.GetSpacing()[1]:.6f}\\'
                                                                          f'{image.GetSpacing()[0]:.6f}'}
        for tag, value in {**tags, **{t: v for t, v in extra.items() if v is not None}}.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f'{series_uid}_{k:03d}.dcm'))
        writer.Execute(s)
    return folder
