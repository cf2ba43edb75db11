"""Medical image files in: NIfTI through nibabel, MetaImage (``.mha``/``.mhd``), NRRD (``.nrrd``/``.nhdr``)
and DICOM series folders through SimpleITK, all as ``(data, reference)``: a float32 array (X, Y, Z) in the file's
voxel order and a ``nibabel.Nifti1Image`` whose ``affine`` maps voxel indices to RAS+ world millimetres, so the rest
of the toolkit (util.geometry.Geometry) sees every format the same way. A DICOM series is read in floating point, every
slice with its own Rescale Slope and Intercept (scanners such as Philips' give each slice its own; read in the first
slice's integer type, values beyond it would wrap round and fractions be cut).

Orientation. NIfTI affines are RAS+ (+x = patient's Right, +y = Anterior, +z = Superior); ITK's origin and direction
are LPS+ (+x = Left, +y = Posterior, +z = Superior). A voxel (i, j, k) of an ITK image lies at
``LPS = origin + direction @ diag(spacing) @ (i, j, k)``; the same point in RAS is ``diag(-1, -1, 1) @ LPS``, so
``affine = diag(-1, -1, 1, 1) @ [[direction @ diag(spacing), origin], [0, 1]]`` (and back). SimpleITK's array axes
are (k, j, i); they are transposed to (i, j, k) so a voxel index means the same in every format.

Writing a synthetic volume in these formats is inference/export/volume_file.py's."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from util.nifti import load_nifti

NIFTI_EXTENSIONS = ('.nii.gz', '.nii')
ITK_EXTENSIONS = ('.mha', '.mhd', '.nrrd', '.nhdr')
IMAGE_EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS
FORMAT_NAMES = {'.nii.gz': 'NIfTI', '.nii': 'NIfTI', '.mha': 'MetaImage', '.mhd': 'MetaImage', '.nrrd': 'NRRD',
                '.nhdr': 'NRRD'}


LPS_FLIP = np.diag([-1.0, -1.0, 1.0])
DICOM_SERIES_DESCRIPTION = '0008|103e'
DICOM_MODALITY = '0008|0060'


def image_extension(path: str) -> str | None:
    """The supported image extension ``path`` ends with (lower case, '.nii.gz' before '.nii'), else None."""
    lower = path.lower()
    return next((ext for ext in IMAGE_EXTENSIONS if lower.endswith(ext)), None)


def image_stem(path: str) -> str:
    """File or folder name without its image extension: 'mr' for '.../mr.nii.gz', 'p1' for a DICOM folder p1/."""
    name = os.path.basename(os.path.normpath(path))
    ext = image_extension(name)
    return name[:-len(ext)] if ext else name


def simpleitk():
    """The SimpleITK module, imported on first use (reading NIfTI alone does not need it)."""
    import SimpleITK
    return SimpleITK


def itk_affine(origin, spacing, direction) -> np.ndarray:
    """4x4 RAS+ voxel -> mm affine of an ITK image (LPS+ ``origin``, ``spacing``, 3x3 ``direction``)."""
    m = np.eye(4)
    m[:3, :3] = LPS_FLIP @ np.asarray(direction, np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing, np.float64))
    m[:3, 3] = LPS_FLIP @ np.asarray(origin, np.float64)
    return m


def affine_to_itk(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(origin, spacing, direction (row-major 9-tuple)) of the ITK image with this RAS+ affine."""
    lps = LPS_FLIP @ np.asarray(affine, np.float64)[:3, :3]
    spacing = np.sqrt((lps ** 2).sum(axis=0))
    if np.any(spacing == 0):
        raise ValueError(f'affine has a zero-length axis:\n{affine}')
    direction = lps / spacing
    origin = LPS_FLIP @ np.asarray(affine, np.float64)[:3, 3]
    return tuple(float(v) for v in origin), tuple(float(v) for v in spacing), tuple(float(v) for v in direction.ravel())


def reference_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """An in-memory NIfTI image of ``data`` with ``affine`` (scanner coordinates), the reference type used for
    every format."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units('mm', 'sec')
    return img


def dicom_series(folder: str) -> dict[str, list[str]]:
    """{series instance UID: sorted slice files} of the DICOM series directly in ``folder`` ({} when none)."""
    sitk = simpleitk()
    reader = sitk.ImageSeriesReader
    return {uid: list(reader.GetGDCMSeriesFileNames(folder, uid)) for uid in reader.GetGDCMSeriesIDs(folder)}


def _series_label(files: list[str]) -> str:
    """'<modality> "<description>", N files' of a DICOM series (from its first file's header)."""
    sitk = simpleitk()
    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    try:
        info.ReadImageInformation()
        tags = [info.GetMetaData(t).strip() if info.HasMetaDataKey(t) else '' for t in (DICOM_MODALITY,
                                                                                          DICOM_SERIES_DESCRIPTION)]
    except RuntimeError:
        tags = ['', '']
    return f'{tags[0] or "?"} "{tags[1]}", {len(files)} files'


def choose_series(folder: str, found: dict[str, list[str]], series: str | None) -> str:
    """The series UID to read from ``folder``: ``series``, or the only one; ValueError listing the series (UID,
    modality, description, file count) when there are several and none is chosen, or the chosen one is absent."""
    if not found:
        raise ValueError(f'{folder}: no DICOM series found in this folder')
    if series is None and len(found) > 1:
        listing = '\n'.join(f'  {uid}: {_series_label(files)}' for uid, files in found.items())
        raise ValueError(f'{folder} holds {len(found)} DICOM series; choose one with --series UID:\n{listing}')
    uid = series if series is not None else next(iter(found))
    if uid not in found:
        raise ValueError(f'{folder}: no DICOM series {uid}; it holds {", ".join(found)}')
    return uid


def read_dicom_series(folder: str, series: str | None = None) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The DICOM series in ``folder`` (``series``: its instance UID, needed when there are several)."""
    found = dicom_series(folder)
    uid = choose_series(folder, found, series)
    sitk = simpleitk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(found[uid])
    reader.SetOutputPixelType(sitk.sitkFloat32)     # each slice rescaled by its own slope and intercept
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise ValueError(f'{folder}: DICOM series {uid} cannot be read ({_first_line(e)})') from None
    return _from_itk(image, f'{folder} (DICOM series {uid})')


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return next((ln for ln in reversed(lines) if 'error' in ln.lower() or 'exception' in ln.lower()),
                lines[-1] if lines else type(exc).__name__)


def _from_itk(image, label: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """(float32 (X, Y, Z) array, reference) of a SimpleITK image; ValueError unless scalar 3D and finite."""
    sitk = simpleitk()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f'{label}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components '
                         f'per voxel')
    size = list(image.GetSize())
    dim = image.GetDimension()
    if dim == 4 and size[3] == 1:       # a 3D volume stored with a time axis of one
        image = image[:, :, :, 0]
        dim, size = 3, size[:3]
    if dim != 3:
        raise ValueError(f'{label}: expected a 3D volume, got a {dim}D image of size {tuple(size)}')
    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).astype(np.float32, copy=False).transpose(2, 1, 0))
    _check_finite(data, label)
    affine = itk_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return data, reference_image(data, affine)


def _check_finite(data: np.ndarray, label: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f'{label}: {bad} voxels are NaN or Inf')


def read_image(path: str, series: str | None = None) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a 3D volume: NIfTI (nibabel), MetaImage, NRRD (SimpleITK), or a DICOM series folder (``series`` picks
    one of several). Returns float32 data (X, Y, Z) in file voxel order and a reference NIfTI image whose affine is
    the RAS+ voxel -> mm map. FileNotFoundError for a missing path, ValueError naming the file for anything else
    (unsupported, truncated or corrupt, not 3D, several DICOM series, NaN/Inf voxels)."""
    if os.path.isdir(path):
        return read_dicom_series(path, series)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: file not found')
    ext = image_extension(path)
    if ext in NIFTI_EXTENSIONS:
        return load_nifti(path)
    if ext is None:
        raise ValueError(f'{path}: unsupported file type; expected one of {", ".join(IMAGE_EXTENSIONS)} or a DICOM '
                         f'series folder')
    sitk = simpleitk()
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise ValueError(f'{path}: cannot be read as {FORMAT_NAMES[ext]}, truncated or corrupt '
                         f'({_first_line(e)})') from None
    return _from_itk(image, path)
