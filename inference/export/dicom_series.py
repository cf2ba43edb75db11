"""DICOM series with their identity (pydicom): a source series checked before it is used, and a synthetic CT written
as a CT Image Storage series that a radiotherapy planning system takes as it is.

Source checks (:func:`read_source_series`): the modality the model reads, single-frame images (an enhanced
multi-frame object is refused naming its SOP class), one orientation, one pixel grid, and slices evenly spaced
along the slice normal without gaps or shear; the first bad slice is named. With ``resample=True`` unevenly spaced
slices are accepted and :func:`resample_slices` puts them on an even grid (linear along the normal).

Identity (:class:`SeriesIdentity`): from a DICOM source the patient and study modules, the Study Instance UID and
the Frame of Reference UID are kept (the synthetic CT registers to the MR and its contours by definition) and every
source image is referenced; from a file without DICOM identity new study and frame-of-reference UIDs are made and
the series says it is registered to no existing study. Series and SOP Instance UIDs are always new. Laterality
follows the MR as the General Series module conditions it (inference.export.laterality).

Geometry (:func:`write_ct_series`): the volume's RAS affine is taken to DICOM's LPS (util.image_io.affine_to_itk).
Voxel (i, j, k) is pixel (row j, column i) of slice k: Image Orientation (Patient) holds the LPS directions of i
(along a row) and j (down a column), Pixel Spacing (spacing of j, spacing of i), and Image Position (Patient) of
slice k the LPS point of voxel (0, 0, k). Pixels are signed 16-bit HU (Rescale Slope 1, Intercept 0), the volume
rounded to whole HU. The series is written into a hidden temporary folder and renamed into place
(util.whole_folder): it appears complete or not at all, and what a killed write left is removed by the next write of
the same series.
"""
from __future__ import annotations

import datetime
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom import config as dicom_config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import validate_value

from inference.export.laterality import UNKNOWN, series_laterality
from util.disk import writing
from util.image_io import LPS_FLIP, affine_to_itk
from util.version import TOOLKIT_NAME, __version__
from util.whole_folder import leftovers, whole_folder

CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2'
# copied from the source series into every CT file: Patient, General Study, Frame of Reference modules and the
# patient position and body part of the General Series module (laterality: inference.export.laterality)
PATIENT_FIELDS = ('PatientName', 'PatientID', 'PatientBirthDate', 'PatientSex')
STUDY_FIELDS = ('StudyInstanceUID', 'StudyDate', 'StudyTime', 'StudyID', 'AccessionNumber', 'ReferringPhysicianName',
                'StudyDescription')
KEPT_FIELDS = PATIENT_FIELDS + STUDY_FIELDS + ('FrameOfReferenceUID', 'PositionReferenceIndicator', 'PatientPosition',
                                               'BodyPartExamined')
OPTIONAL_FIELDS = ('StudyDescription', 'BodyPartExamined')    # type 3: left out when empty; the others are type 2
# (center, width, explanation) in HU
WINDOWS = ((40, 400, 'SOFT TISSUE'), (400, 1800, 'BONE'))
HU_LIMITS = (-32768, 32767)
ORIENTATION_TOL = 1e-4                # direction cosines
SPACING_TOL = 0.01                    # relative difference of slice steps (and pixel spacing) still "equal"
SOURCE_PURPOSE = ('121322', 'DCM', 'Source image for image processing operation')
NEW_STUDY_ID = 'SCT'                  # Study ID of a study made for a synthetic CT from a file
NOT_REGISTERED = 'not registered to any existing DICOM study: new Study and Frame of Reference UIDs'


def check_field(keyword: str, value: str, label: str) -> str:
    """``value`` if it fits the value representation of the DICOM attribute ``keyword``; ValueError naming the
    field, its VR and the reason otherwise (``label``: where the value comes from, e.g. '--patient_name')."""
    vr = dictionary_VR(keyword)
    if isinstance(value, (list, tuple, MultiValue)):
        value = '\\'.join(str(v) for v in value)    # several values read from a file: refused below
    value = '' if value is None else str(value)
    if '\\' in value:
        raise ValueError(f'{label} "{value}": {keyword} ({vr}) holds one value; a backslash separates values')
    if any(ord(c) < 32 for c in value):
        raise ValueError(f'{label} "{value}": {keyword} ({vr}) cannot hold control characters')
    try:
        validate_value(vr, value, dicom_config.RAISE)
    except ValueError as exc:
        raise ValueError(f'{label} "{value}" does not fit {keyword} (DICOM {vr}): {exc}') from None
    return value


# ----------------------------------------------------------------------------- the source series

@dataclass(frozen=True)
class SeriesIdentity:
    """What every file of the synthetic CT series carries about where it belongs: ``kept`` attributes (keyword ->
    value: patient, study, frame of reference), the (SOP class, SOP instance) UIDs of the source images, whether it
    is registered to the source's study and frame of reference, and its ``laterality`` attributes (keyword -> value;
    one left out is absent)."""
    kept: dict[str, str]
    source_images: tuple[tuple[str, str], ...] = ()
    registered: bool = True
    source_series: str = ''
    source_series_number: int | None = None
    slice_thickness: float | None = None
    laterality: dict[str, str] = field(default_factory=lambda: dict(UNKNOWN))

    @classmethod
    def new(cls, patient_id: str | None = None, patient_name: str | None = None) -> 'SeriesIdentity':
        """No DICOM identity to keep (a NIfTI, MHA or NRRD input): new Study and Frame of Reference UIDs, the study
        dated now, patient fields from the command line (or empty)."""
        now = datetime.datetime.now()
        kept = {'PatientID': check_field('PatientID', patient_id, '--patient_id'),
                'PatientName': check_field('PatientName', patient_name, '--patient_name'),
                'StudyInstanceUID': generate_uid(prefix=None), 'FrameOfReferenceUID': generate_uid(prefix=None),
                'StudyDate': now.strftime('%Y%m%d'), 'StudyTime': now.strftime('%H%M%S'), 'StudyID': NEW_STUDY_ID,
                'StudyDescription': 'synthetic CT'}
        return cls(kept, registered=False)


@dataclass(frozen=True)
class SourceSeries:
    """A checked DICOM series: its files in slice order (ascending along the slice normal) and their headers."""
    folder: str
    uid: str
    files: list[str]
    headers: list[Dataset] = field(repr=False)
    positions: np.ndarray                 # (N,) mm along the slice normal
    even: bool                            # slices evenly spaced (False only when resampling was asked)

    def identity(self, patient_id: str | None = None, patient_name: str | None = None) -> SeriesIdentity:
        """The source's patient, study and frame of reference (``patient_id``/``patient_name`` replace the
        patient's, if given), every source image referenced."""
        first = self.headers[0]
        label = f'{self.folder} (DICOM series {self.uid})'
        kept = {k: check_field(k, first.get(k, ''), f'{label}: {k}') for k in KEPT_FIELDS}
        if not kept['StudyInstanceUID'] or not kept['FrameOfReferenceUID']:
            missing = 'StudyInstanceUID' if not kept['StudyInstanceUID'] else 'FrameOfReferenceUID'
            raise ValueError(f'{label}: the MR has no {missing}, so a synthetic CT cannot be placed in its study and '
                             f'frame of reference')
        for keyword, value, flag in (('PatientID', patient_id, '--patient_id'),
                                     ('PatientName', patient_name, '--patient_name')):
            if value is not None:
                kept[keyword] = check_field(keyword, value, flag)
        number = first.get('SeriesNumber')
        thickness = first.get('SliceThickness')
        laterality, note = series_laterality(first, label)
        if note:
            warnings.warn(note, UserWarning, stacklevel=2)
        return SeriesIdentity(kept, tuple((str(h.SOPClassUID), str(h.SOPInstanceUID)) for h in self.headers),
                              True, self.uid, int(number) if number not in (None, '') else None,
                              float(thickness) if thickness not in (None, '') and self.even else None, laterality)


def _normal(header: Dataset) -> np.ndarray:
    iop = np.asarray(header.ImageOrientationPatient, np.float64)
    return np.cross(iop[:3], iop[3:])


def read_source_series(folder: str, files: list[str], uid: str, modality: str,
                       resample: bool = False) -> SourceSeries:
    """Read and check the headers of the DICOM series ``uid`` (``files``) in ``folder``: modality ``modality``
    ('MR' or 'CT'), single-frame images, one orientation and pixel grid, slices evenly spaced along the normal
    (gaps and unequal steps accepted with ``resample``). ValueError naming the series and the first bad slice."""
    label = f'{folder} (DICOM series {uid})'
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
            raise ValueError(f'{label}: {path} cannot be read as DICOM ({exc})') from None
    first = headers[0]
    sop = UID(str(first.get('SOPClassUID', '')))
    frames = int(first.get('NumberOfFrames', 1) or 1)
    if frames > 1 or 'Enhanced' in sop.name:
        raise ValueError(f'{label}: a multi-frame {sop.name} object ({sop}, {frames} frames); export the series as '
                         f'single-frame MR Image Storage images (one file per slice)')
    if str(first.get('Modality', '')).upper() != modality:
        raise ValueError(f'{label}: modality {first.get("Modality", "(none)")}, not {modality}; this model reads '
                         f'{modality} images')
    for h, path in zip(headers, files):
        if 'ImageOrientationPatient' not in h or 'ImagePositionPatient' not in h or 'PixelSpacing' not in h:
            raise ValueError(f'{label}: slice {path} has no Image Position/Orientation (Patient) or Pixel Spacing')
    iop0 = np.asarray(first.ImageOrientationPatient, np.float64)
    for h, path in zip(headers, files):
        if np.abs(np.asarray(h.ImageOrientationPatient, np.float64) - iop0).max() > ORIENTATION_TOL:
            raise ValueError(f'{label}: mixed orientations: slice {path} has Image Orientation (Patient) '
                             f'{list(h.ImageOrientationPatient)}, the first slice {list(iop0)}')
        if (h.Rows, h.Columns) != (first.Rows, first.Columns) or \
                np.abs(np.subtract(h.PixelSpacing, first.PixelSpacing)).max() > SPACING_TOL * min(first.PixelSpacing):
            raise ValueError(f'{label}: slice {path} has {h.Rows}x{h.Columns} pixels of {list(h.PixelSpacing)} mm, '
                             f'the first slice {first.Rows}x{first.Columns} of {list(first.PixelSpacing)} mm')
    normal = _normal(first)
    points = np.asarray([h.ImagePositionPatient for h in headers], np.float64)
    order = np.argsort(points @ normal, kind='stable')
    headers, files, points = [headers[i] for i in order], [files[i] for i in order], points[order]
    positions = points @ normal
    if len(files) > 1:
        steps = np.diff(positions)
        offsets = points - points[0] - np.outer(positions - positions[0], normal)
        sheared = np.flatnonzero(np.linalg.norm(offsets, axis=1) > SPACING_TOL * max(float(np.median(steps)), 1e-6))
        if sheared.size:
            raise ValueError(f'{label}: slice {files[sheared[0]]} is shifted within the slice plane against the first '
                             f'(sheared stack, e.g. gantry tilt); such a series cannot be written as straight slices')
        if steps.min() <= SPACING_TOL * abs(steps[0]) or steps[0] == 0:
            bad = int(np.argmin(steps)) + 1
            raise ValueError(f'{label}: slice {files[bad]} lies at the same position as the slice before it '
                             f'({positions[bad]:.3f} mm along the normal); duplicate slices')
        uneven = np.flatnonzero(np.abs(steps - steps[0]) > SPACING_TOL * steps[0])
        if uneven.size and not resample:
            bad = int(uneven[0]) + 1
            raise ValueError(f'{label}: slice {files[bad]} is {steps[bad - 1]:.3f} mm from the slice before it, '
                             f'where the series starts with {steps[0]:.3f} mm steps (a gap or unequal spacing); pass '
                             f'--resample_slices to resample the series onto even {steps[0]:.3f} mm steps')
        even = not uneven.size
    else:
        even = True
    return SourceSeries(folder, uid, files, headers, positions, even)


def resample_slices(series: SourceSeries) -> tuple[np.ndarray, np.ndarray]:
    """(data (X, Y, Z) float32 in the image_io voxel order, RAS affine) of an unevenly spaced series put onto even
    steps of its first step from its first slice to its last, linear along the normal (pixel values with their
    rescale slope and intercept)."""
    slices = []
    for path in series.files:
        ds = pydicom.dcmread(path)
        slope, intercept = float(ds.get('RescaleSlope', 1) or 1), float(ds.get('RescaleIntercept', 0) or 0)
        slices.append(ds.pixel_array.astype(np.float32).T * slope + intercept)   # (columns i, rows j)
    stack = np.stack(slices, axis=-1)
    step = float(series.positions[1] - series.positions[0])
    count = int(np.floor((series.positions[-1] - series.positions[0]) / step * (1 + 1e-6))) + 1
    targets = series.positions[0] + step * np.arange(count)
    upper = np.clip(np.searchsorted(series.positions, targets, side='right'), 1, len(series.files) - 1)
    lower = upper - 1
    weight = ((targets - series.positions[lower]) / (series.positions[upper] - series.positions[lower]))
    data = stack[..., lower] * (1 - weight).astype(np.float32) + stack[..., upper] * weight.astype(np.float32)
    first = series.headers[0]
    iop = np.asarray(first.ImageOrientationPatient, np.float64)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = iop[:3] * col_mm, iop[3:] * row_mm, _normal(first) * step
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, np.float64)
    affine = np.eye(4)
    affine[:3] = LPS_FLIP @ lps[:3]
    return np.ascontiguousarray(data, np.float32), affine


# ----------------------------------------------------------------------------- the synthetic CT series

@dataclass(frozen=True)
class Provenance:
    """What the series says about how it was made: its Series Description (at most 64 characters, says it is
    synthetic and names the checkpoint) and Derivation Description (the full story: model file, SAM file)."""
    series_description: str
    derivation: str


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _series_dataset(identity: SeriesIdentity, provenance: Provenance, series_uid: str, now: datetime.datetime,
                    hu_shape: tuple[int, int]) -> Dataset:
    """The attributes every file of the series shares."""
    ds = Dataset()
    ds.SpecificCharacterSet = 'ISO_IR 192'
    ds.SOPClassUID = CT_IMAGE_STORAGE
    for keyword in KEPT_FIELDS:           # type 2 (and 2C) attributes are present even when empty
        value = identity.kept.get(keyword, '')
        if value or keyword not in OPTIONAL_FIELDS:
            setattr(ds, keyword, value)
    for keyword, value in identity.laterality.items():
        setattr(ds, keyword, value)
    ds.Modality = 'CT'
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = (identity.source_series_number or 0) + 1000
    ds.SeriesDescription = provenance.series_description
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime('%Y%m%d')
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime('%H%M%S')
    ds.Manufacturer = TOOLKIT_NAME
    ds.ManufacturerModelName = TOOLKIT_NAME
    ds.SoftwareVersions = __version__
    ds.ImageType = ['DERIVED', 'SECONDARY', 'AXIAL']
    ds.DerivationDescription = provenance.derivation
    if identity.source_images:
        items = []
        for sop_class, sop_instance in identity.source_images:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
            item.PurposeOfReferenceCodeSequence = Sequence([_code(*SOURCE_PURPOSE)])
            items.append(item)
        ds.SourceImageSequence = Sequence(items)
    ds.AcquisitionNumber = ''
    ds.KVP = ''
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.Rows, ds.Columns = hu_shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, 'HU'
    ds.WindowCenter = [c for c, _, _ in WINDOWS]
    ds.WindowWidth = [w for _, w, _ in WINDOWS]
    ds.WindowCenterWidthExplanation = [e for _, _, e in WINDOWS]
    return ds


def dicom_geometry(affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[list[float], list[float], np.ndarray,
                                                                            float]:
    """(Image Orientation (Patient), Pixel Spacing, (Z, 3) Image Position (Patient) of each slice k, slice spacing)
    in LPS mm of a volume with RAS ``affine``; ValueError when the slice axis is not perpendicular to the slices."""
    origin, spacing, direction = affine_to_itk(affine)
    d = np.asarray(direction).reshape(3, 3)
    if abs(d[:, 2] @ np.cross(d[:, 0], d[:, 1])) < 1 - ORIENTATION_TOL or abs(d[:, 0] @ d[:, 1]) > ORIENTATION_TOL:
        raise ValueError('the volume\'s voxel grid is sheared (its slice axis is not perpendicular to the slices); a '
                         'CT Image Storage series cannot hold it')
    positions = np.asarray(origin) + np.outer(np.arange(shape[2]) * spacing[2], d[:, 2])
    return [*d[:, 0], *d[:, 1]], [spacing[1], spacing[0]], positions, spacing[2]


def _ds(value: float) -> str:
    """A decimal string (DS, at most 16 characters) as exact as it fits."""
    for digits in range(10, 0, -1):
        text = f'{value:.{digits}f}'.rstrip('0').rstrip('.')
        text = '0' if text in ('-0', '') else text
        if len(text) <= 16:
            return text
    raise ValueError(f'{value} does not fit a DICOM decimal string')


def write_ct_series(hu: np.ndarray, affine: np.ndarray, folder: str, identity: SeriesIdentity,
                    provenance: Provenance, overwrite: bool = False) -> list[str]:
    """Write ``hu`` ((X, Y, Z) in HU, file voxel order, RAS ``affine``) as a CT Image Storage series, one file
    ``CT_<k>.dcm`` per slice k, into ``folder`` (made as a whole: temporary folder, then renamed; an existing
    folder is replaced only with ``overwrite``). Returns the file paths."""
    values = np.round(np.asarray(hu, np.float64))
    if values.min() < HU_LIMITS[0] or values.max() > HU_LIMITS[1]:
        raise ValueError(f'{folder}: HU values {values.min():.0f}..{values.max():.0f} do not fit signed 16 bits')
    pixels = values.astype('<i2')
    iop, pixel_spacing, positions, step = dicom_geometry(affine, pixels.shape)
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not overwrite:
        raise ValueError(f'output folder {folder} already exists; pass --overwrite to replace it')
    _report_leftovers(folder)
    series_uid = generate_uid(prefix=None)
    now = datetime.datetime.now()
    shared = _series_dataset(identity, provenance, series_uid, now, (pixels.shape[1], pixels.shape[0]))
    shared.ImageOrientationPatient = [_ds(v) for v in iop]          # the same on every slice
    shared.PixelSpacing = [_ds(v) for v in pixel_spacing]
    shared.SliceThickness = _ds(identity.slice_thickness or step)
    normal = np.cross(iop[:3], iop[3:])
    names = []
    with whole_folder(folder) as tmp:     # a full disk or read-only mount: one clear line naming the file
        for k in range(pixels.shape[2]):
            ds = Dataset()
            ds.update(shared)
            ds.SOPInstanceUID = generate_uid(prefix=None)
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
            ds.SliceLocation = _ds(float(positions[k] @ normal))
            ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            name = f'CT_{k + 1:04d}.dcm'
            with writing(os.path.join(folder, name)), open(os.path.join(tmp, name), 'wb') as f:
                ds.save_as(f, enforce_file_format=True)
                f.flush()
                os.fsync(f.fileno())
            names.append(name)
    return [os.path.join(folder, n) for n in names]


def _report_leftovers(folder: str) -> None:
    """One line for each partial series that a killed write of ``folder`` left beside it: those of
    util.whole_folder (its writer's process gone on this host) are removed by the write about to start; those of
    earlier versions (``.<name>.<random>``, ``.<name>.old.<random>``: no writer named, so no telling whether one still
    runs) are left, to be removed by hand."""
    for path in leftovers(folder):
        print(f'{path}: removing a partial DICOM series left by an interrupted write', flush=True)
    parent, name = os.path.split(folder)
    earlier = re.compile(rf'\.{re.escape(name)}\.(old\.)?[a-z0-9_]{{8}}')
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        if earlier.fullmatch(entry) and os.path.isdir(os.path.join(parent, entry)):
            print(f'{os.path.join(parent, entry)}: a partial DICOM series left by an interrupted write of an earlier '
                  f'version, which names no writer; remove it by hand once no predict is writing {folder}', flush=True)
