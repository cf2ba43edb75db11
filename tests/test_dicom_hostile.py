"""DICOM series as hospitals write them, and writes cut short (util/image_io.py, inference/export/dicom_series.py,
inference/export/laterality.py): every slice read with its own rescale slope and intercept, checked against pydicom;
a series write killed half-way removed by the next write; Laterality written only where the General Series module
asks for it, checked by dciodvfy (dicom3tools) where it is installed. MR series are written here with pydicom alone."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from inference.export.dicom_series import Provenance, SeriesIdentity, read_source_series, write_ct_series
from util.image_io import dicom_series, read_image

MR_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.4'
needs_dciodvfy = pytest.mark.skipif(shutil.which('dciodvfy') is None,
                                    reason='dciodvfy (dicom3tools) is not installed: apt-get install dicom3tools')


def write_mr(folder: Path, raw: np.ndarray, slopes: list[str], intercepts: list[str], tags: dict | None = None
             ) -> list[Path]:
    """Unsigned 16-bit MR slices ``raw`` (k, rows, columns), slice k at z = 2 k mm with its own slope and intercept,
    one MR Image Storage file each (explicit VR little endian); ``tags`` added to every slice."""
    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k, pixels in enumerate(raw):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MR_IMAGE_STORAGE, generate_uid(), 'MR'
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.SeriesNumber, ds.InstanceNumber = 'Hostile^Test', 'H-1', 5, k + 1
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 2 * k]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 2
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 'MONOCHROME2'
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slopes[k], intercepts[k]
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(pixels, '<u2').tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MR_IMAGE_STORAGE, \
            ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        files.append(folder / f'IM{k:04d}.dcm')
        ds.save_as(files[-1], enforce_file_format=True)
    return files


# ----------------------------------------------------------------------------- item 1: per-slice rescale

def test_every_slice_is_read_with_its_own_rescale_as_pydicom_computes_it(tmp_path):
    """Philips-like: the first slice has slope 1 (so an integer series type), the others their own slopes and
    intercepts giving values above 65535, fractions and negatives; the volume read is pydicom's pixel_array * slope
    + intercept of each slice (the old reader wrapped round at 65536 and cut the fractions)."""
    raw = np.random.default_rng(3).integers(0, 40000, (4, 8, 8)).astype(np.uint16)
    files = write_mr(tmp_path / 'mr', raw, ['1', '2.5', '0.37', '3'], ['0', '-100.25', '7.5', '-1024'])
    expected = []
    for path in files:
        ds = pydicom.dcmread(path)
        expected.append(ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    expected = np.stack(expected, axis=-1).transpose(1, 0, 2)       # (rows j, columns i, k) -> (i, j, k)
    assert expected.max() > 65535 and np.any(expected % 1) and expected.min() < 0    # the series is hostile
    data, reference = read_image(str(tmp_path / 'mr'))
    assert data.dtype == np.float32 and data.shape == (8, 8, 4)
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(np.diag(reference.affine), [-1, -1, 2, 1])


# ----------------------------------------------------------------------------- item 2: a killed write

def killed_write(folder: Path, hu: np.ndarray, affine: np.ndarray, at_file: int) -> None:
    """write_ct_series(..., overwrite=True) in a forked process that SIGKILLs itself while writing file ``at_file``
    (that file cut short)."""
    pid = os.fork()
    if pid == 0:
        try:
            def save_then_die(self, f, *args, **kwargs):
                if self.InstanceNumber == at_file:
                    f.write(b'DICM cut short')
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return real_save(self, f, *args, **kwargs)
            real_save = pydicom.Dataset.save_as
            pydicom.Dataset.save_as = save_then_die
            write_ct_series(hu, affine, str(folder), SeriesIdentity.new(), Provenance('killed', 'killed'), True)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_killed_series_write_leaves_the_old_series_and_the_next_write_removes_its_leftover(tmp_path, capsys):
    hu = np.arange(4 * 3 * 5, dtype=np.float64).reshape(4, 3, 5) * 10 - 300
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    folder = tmp_path / 'p1_sct'
    first = write_ct_series(hu, affine, str(folder), SeriesIdentity.new(), Provenance('one', 'one'))
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in first]
    killed_write(folder, hu + 1, affine, at_file=3)
    hidden = [e for e in os.listdir(tmp_path) if e.startswith('.')]
    assert len(hidden) == 1 and len(os.listdir(tmp_path / hidden[0])) == 3      # two whole files and the cut one
    assert [pydicom.dcmread(f).SOPInstanceUID for f in first] == uids            # the old series, untouched
    earlier = tmp_path / '.p1_sct.abcd1234'          # as versions before util.whole_folder named a partial series
    earlier.mkdir()
    capsys.readouterr()
    files = write_ct_series(hu + 2, affine, str(folder), SeriesIdentity.new(), Provenance('two', 'two'), True)
    out = capsys.readouterr().out
    assert f'{tmp_path / hidden[0]}: removing a partial DICOM series left by an interrupted write' in out
    assert f'{earlier}: a partial DICOM series left by an interrupted write of an earlier version' in out
    assert sorted(e for e in os.listdir(tmp_path) if e.startswith('.')) == [earlier.name]   # named, not removed
    back = np.stack([pydicom.dcmread(f).pixel_array for f in files], axis=-1).transpose(1, 0, 2)
    np.testing.assert_array_equal(back, hu + 2)


# ----------------------------------------------------------------------------- item 6: Laterality

# (the MR's tags, the CT's laterality attributes (absent ones left out), a note that the side is unknown)
LATERALITY_CASES = {
    'no body part': ({}, {'Laterality': ''}, False),
    'HEAD': ({'BodyPartExamined': 'HEAD'}, {}, False),
    'HEAD, an MR Laterality': ({'BodyPartExamined': 'HEAD', 'Laterality': 'L'}, {}, False),
    'PELVIS': ({'BodyPartExamined': 'PELVIS'}, {}, False),
    'KNEE, left': ({'BodyPartExamined': 'KNEE', 'Laterality': 'L'}, {'Laterality': 'L'}, False),
    'KNEE, no side': ({'BodyPartExamined': 'KNEE'}, {'Laterality': ''}, True),
    'BREAST, Image Laterality': ({'BodyPartExamined': 'BREAST', 'ImageLaterality': 'R', 'Laterality': 'R'},
                                 {'ImageLaterality': 'R'}, False),
    'no body part, a side': ({'Laterality': 'R'}, {'Laterality': 'R'}, False),
    'THORAX, in neither list': ({'BodyPartExamined': 'THORAX'}, {'Laterality': ''}, False),
}


@pytest.fixture(scope='module')
def laterality_series(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """case -> (the first file of the CT series written from that MR as predict does, the warnings given)."""
    root = tmp_path_factory.mktemp('laterality')
    written = {}
    for case, (tags, _, _) in LATERALITY_CASES.items():
        mr = root / case.replace(' ', '_').replace(',', '')
        write_mr(mr, np.full((2, 4, 4), 300, np.uint16), ['1', '1'], ['0', '0'], tags)
        uid, files = next(iter(dicom_series(str(mr)).items()))
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter('always')
            identity = read_source_series(str(mr), files, uid, 'MR').identity()
        ct = write_ct_series(np.zeros((4, 4, 2)), np.diag([-1.0, -1.0, 2.0, 1.0]), str(root / f'{mr.name}_sct'),
                             identity, Provenance('SYNTHETIC CT', 'test'))
        written[case] = (Path(ct[0]), [str(w.message) for w in record])
    return written


@pytest.mark.parametrize('case', LATERALITY_CASES)
def test_laterality_is_written_only_where_the_general_series_module_asks_for_it(laterality_series, case):
    _, expected, note = LATERALITY_CASES[case]
    path, said = laterality_series[case]
    ds = pydicom.dcmread(path)
    assert {k: str(ds[k].value or '') for k in ('Laterality', 'ImageLaterality') if k in ds} == expected
    if not note:
        assert said == []
        return
    assert len(said) == 1 and said[0].startswith(f'{path.parent.parent / "KNEE_no_side"} (DICOM series ')
    assert ('the MR examines KNEE, a paired body part, but names no side (Laterality, Image Laterality): the '
            'synthetic CT series\' Laterality is left empty (unknown)') in said[0]


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's Error and Warning lines for one file."""
    run = subprocess.run(['dciodvfy', '-new', str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith(('Error', 'Warning'))]


@needs_dciodvfy
def test_every_laterality_case_passes_dciodvfy_without_error(laterality_series):
    """No error for any case (HEAD wrote an empty Laterality: "present when condition unsatisfied"); the one
    warning, an empty Laterality, only where the side is unknown and the part not known to be unpaired."""
    for case, (path, _) in laterality_series.items():
        messages = dciodvfy(path)
        assert not [m for m in messages if m.startswith('Error')], (case, messages)
        unknown = LATERALITY_CASES[case][1] == {'Laterality': ''}
        assert [m for m in messages if 'Laterality' in m] == (
            ['Warning - </Laterality(0020,0060)> - is only permitted to be empty when actually unknown; should be '
             'absent (not empty) if an unpaired body part, and have a value if a paired body part'] if unknown else []
        ), case
