"""The synthetic CT handed to a planning system (inference/export/: dicom_series.py, handoff.py, qa_page.py): a DICOM
MR series in, a CT Image Storage series out in the MR's study and frame of reference, read back tag by tag with
pydicom and voxel by voxel with SimpleITK; the patient's left stays left; NIfTI in, DICOM out in a new study; the QA
page and predict_summary.csv; every bad input refused with one line before anything is written."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from image_fixtures import PATIENT_STUDY_TAGS, STUDY_UID, itk_volume, lr_phantom, write_dicom_series
import train as train_script
from test_predict import TINY, run_predict, write_case
from scripts import predict
from inference.export.dicom_series import (CT_IMAGE_STORAGE, Provenance, SeriesIdentity, read_source_series,
                                           resample_slices, write_ct_series)
from util.disk import WriteError
from util.image_io import dicom_series, read_image, reference_image
from inference.export.volume_file import write_image
from util.version import __version__

MR_ORIGIN, MR_SPACING = (-5.0, 12.5, 40.0), (1.0, 1.2, 2.0)
MR_SERIES = '1.2.826.0.1.3680043.2.1125.1'
PATIENT = {'PatientName': '0010|0010', 'PatientID': '0010|0020', 'PatientBirthDate': '0010|0030',
           'PatientSex': '0010|0040', 'StudyDate': '0008|0020', 'StudyTime': '0008|0030', 'StudyID': '0020|0010',
           'AccessionNumber': '0008|0050', 'FrameOfReferenceUID': '0020|0052'}


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> dict:
    """A pix2pix MR -> CT (tests/test_predict.py's tiny settings) trained for a few iterations."""
    root = tmp_path_factory.mktemp('handoff')
    write_case(root / 'data' / 's0', {'mr': 'mr', 'ct': 'ct', 'mask': 'mask'}, 0, '.mha')
    train_script.main(TINY + ['--dataroot', str(root / 'data'), '--name', 'p2p', '--checkpoints_dir',
                              str(root / 'checkpoints'), '--split', 'all', '--max_dataset_size', '2'])
    return {'checkpoints': root / 'checkpoints'}


def mr_series(tmp_path: Path, name: str = 'patient', **kwargs) -> tuple[Path, sitk.Image]:
    image = itk_volume(lr_phantom(), origin=MR_ORIGIN, spacing=MR_SPACING)
    return write_dicom_series(tmp_path / name, image, **kwargs), image


def headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(folder / f) for f in sorted(os.listdir(folder))]


def pixel_lps(ds: pydicom.Dataset, row: int, column: int) -> np.ndarray:
    """LPS mm of pixel (row, column) by DICOM's equation (C.7.6.2.1.1), written here by hand."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return np.asarray(ds.ImagePositionPatient, float) + iop[:3] * col_mm * column + iop[3:] * row_mm * row


def test_dicom_mr_gives_a_ct_series_in_its_study_with_the_mr_grid(trained, tmp_path):
    source, mr_image = mr_series(tmp_path)
    lines = run_predict(trained, '--input', str(source), '--output', str(tmp_path / 'out'), '--planes', 'z',
                        '--save_planes')         # one plane: its NIfTI volume beside the series is the prediction
    series = tmp_path / 'out' / 'patient_sct'
    assert 'in the MR\'s study' in lines[0] and f'-> {series} (10 DICOM CT files)' in lines[0]
    mr = headers(source)
    ct = headers(series)
    assert len(ct) == 10
    # identity: new series and instances, the MR's study, frame of reference, patient and study fields
    assert len({d.SeriesInstanceUID for d in ct}) == 1 and ct[0].SeriesInstanceUID != MR_SERIES
    sops = {d.SOPInstanceUID for d in ct}
    assert len(sops) == 10 and not sops & {d.SOPInstanceUID for d in mr}
    for d in ct:
        assert d.SOPClassUID == CT_IMAGE_STORAGE and d.file_meta.MediaStorageSOPClassUID == CT_IMAGE_STORAGE
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.StudyInstanceUID == STUDY_UID and d.Modality == 'CT'
        for keyword, tag in PATIENT.items():
            assert str(d.get(keyword)) == PATIENT_STUDY_TAGS[tag], keyword
        assert list(d.ImageType) == ['DERIVED', 'SECONDARY', 'AXIAL']
        assert {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in d.SourceImageSequence} == \
            {(m.SOPClassUID, m.SOPInstanceUID) for m in mr}
        assert d.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == '121322'
        assert 'SYNTHETIC' in d.SeriesDescription and 'p2p/latest_net_G' in d.SeriesDescription
        assert MR_SERIES in d.DerivationDescription and 'latest_net_G.pth' in d.DerivationDescription
        assert d.ManufacturerModelName == 'MRNet toolkit' and d.SoftwareVersions == __version__
        assert d.SeriesNumber == 1003 and d.PatientPosition == 'HFS'
        assert (d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation) == (16, 16, 15, 1)
        assert (float(d.RescaleSlope), float(d.RescaleIntercept)) == (1.0, 0.0)
        assert [float(v) for v in d.WindowCenter] == [40, 400] and [float(v) for v in d.WindowWidth] == [400, 1800]
        assert float(d.SliceThickness) == MR_SPACING[2]
    # pixels: SimpleITK reads the rounded prediction back exactly, on the MR's grid
    predicted, _ = read_image(str(tmp_path / 'out' / 'patient_sct_dicom_z.nii.gz'))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    back = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back).transpose(2, 1, 0), np.round(predicted))
    assert back.GetSize() == mr_image.GetSize()
    marked = [(0, 0, 0), (11, 13, 9), (6, 11, 5), (3, 8, 2)]        # corners and the left marker
    for index in marked:
        np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(index),
                                   mr_image.TransformIndexToPhysicalPoint(index), atol=1e-4)
        ds = ct[index[2]]                  # files in slice order; pixel (row j, column i)
        np.testing.assert_allclose(pixel_lps(ds, index[1], index[0]), mr_image.TransformIndexToPhysicalPoint(index),
                                   atol=1e-4)
        np.testing.assert_allclose(pixel_lps(ds, index[1], index[0]), pixel_lps(mr[index[2]], index[1], index[0]),
                                   atol=1e-4)
        assert ds.pixel_array[index[1], index[0]] == np.round(predicted[index])
    # the QA page and the summary row
    page = (tmp_path / 'out' / 'patient_sct_qa' / 'index.html').read_text(encoding='utf-8')
    assert 'checks before planning' in page and 'air inside the body' in page and STUDY_UID in page
    with open(tmp_path / 'out' / 'predict_summary.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['name'] for r in rows] == ['patient'] and rows[0]['registered'] == 'yes'
    assert rows[0]['output'] == str(series) and len(rows[0]['input_sha256']) == 64


def test_an_ensemble_names_every_member_in_the_series_and_the_qa_page(trained, tmp_path):
    """predict --name a,b: the derivation, the series description, the QA page and the summary row name every
    member's checkpoint, not only the first."""
    import shutil
    shutil.copytree(trained['checkpoints'] / 'p2p', tmp_path / 'ck' / 'p2p')
    shutil.copytree(trained['checkpoints'] / 'p2p', tmp_path / 'ck' / 'p2p_b')
    source, _ = mr_series(tmp_path)
    predict.main(['--name', 'p2p,p2p_b', '--checkpoints_dir', str(tmp_path / 'ck'), '--gpu_ids', '-1',
                  '--no_progress', '--input', str(source), '--output', str(tmp_path / 'out'), '--planes', 'z'])
    ct = headers(tmp_path / 'out' / 'patient_sct')
    members = [str(tmp_path / 'ck' / n / 'latest_net_G.pth') for n in ('p2p', 'p2p_b')]
    assert 'ensemble of 2 checkpoints' in ct[0].DerivationDescription
    assert all(m in ct[0].DerivationDescription for m in members)
    assert ct[0].SeriesDescription.endswith('p2p/latest_net_G +1')
    page = (tmp_path / 'out' / 'patient_sct_qa' / 'index.html').read_text(encoding='utf-8')
    assert 'checkpoint 1 of 2' in page and 'checkpoint 2 of 2' in page and all(m in page for m in members)
    with open(tmp_path / 'out' / 'predict_summary.csv', newline='') as f:
        assert next(csv.DictReader(f))['checkpoint'] == ';'.join(members)


def test_written_hu_read_back_exactly_by_simpleitk_at_the_same_world_points(tmp_path):
    """Random fractional HU on the permuted LPS grid of the test MR: SimpleITK reads the series back as the volume
    rounded to whole HU, voxel for voxel, every voxel at the same world point."""
    image = itk_volume(np.zeros((7, 9, 5)), origin=MR_ORIGIN, spacing=MR_SPACING)
    data, reference = read_image(str(write_dicom_series(tmp_path / 'mr', image)))
    hu = np.random.default_rng(3).uniform(-1024, 3000, data.shape)
    write_ct_series(hu, reference.affine, str(tmp_path / 'ct'), SeriesIdentity.new(), Provenance('t', 't'))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / 'ct')))
    back = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back).transpose(2, 1, 0), np.round(hu))
    for index in np.ndindex(*data.shape):
        np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(index),
                                   image.TransformIndexToPhysicalPoint(index), atol=1e-4)


@pytest.mark.parametrize('layout', ['dicom', 'ras_nifti'])
def test_the_patients_left_stays_on_the_patients_left(tmp_path, layout):
    """The marker voxels (900) lie at LPS +x (the patient's left) in the written CT, located by hand from each
    file's position and orientation, for a permuted LPS DICOM grid and for a RAS NIfTI grid with flipped axes."""
    if layout == 'dicom':
        source, _ = mr_series(tmp_path)
        data, reference = read_image(str(source))
    else:
        affine = np.diag([1.0, -1.2, 2.0, 1.0])         # i along RAS +x (to the right), j flipped (posterior)
        affine[:3, 3] = (-6.0, 8.0, -9.0)
        data = np.zeros((14, 12, 10))
        data[6:10, 3:9, 2:8] = 200
        data[2, 5:7, 4:6] = 900                         # low i: RAS x most negative, the patient's left
        reference = reference_image(data.astype(np.float32), affine)
    folder = tmp_path / 'ct'
    write_ct_series(data, reference.affine, str(folder), SeriesIdentity.new(), Provenance('test', 'test'))
    body, marker = [], []
    for ds in headers(folder):
        pixels = ds.pixel_array
        for row, column in zip(*np.nonzero(pixels)):
            (marker if pixels[row, column] == 900 else body).append(pixel_lps(ds, row, column))
    assert marker and body
    assert np.mean(marker, axis=0)[0] > np.mean(body, axis=0)[0] + 1      # LPS +x: towards the patient's left
    assert min(p[0] for p in marker) > np.mean(body, axis=0)[0]


def test_nifti_in_dicom_out_is_a_new_study_that_says_it_is_not_registered(trained, tmp_path):
    data, reference = read_image(str(mr_series(tmp_path)[0]))
    nifti = tmp_path / 'mr.nii.gz'
    write_image(data, reference, str(nifti))
    lines = run_predict(trained, '--input', str(nifti), '--output', str(tmp_path / 'out'), '--format', 'dicom',
                        '--patient_id', 'NEW-7', '--patient_name', 'Roe^Richard', '--planes', 'z')
    assert 'mr: DICOM series not registered to any existing DICOM study' in lines[0]
    ct = headers(tmp_path / 'out' / 'mr_sct')
    assert len({(d.StudyInstanceUID, d.FrameOfReferenceUID, d.SeriesInstanceUID) for d in ct}) == 1
    assert ct[0].StudyInstanceUID not in (STUDY_UID, '')
    assert ct[0].FrameOfReferenceUID != PATIENT_STUDY_TAGS['0020|0052']
    assert pydicom.uid.UID(ct[0].StudyInstanceUID).is_valid and ct[0].StudyInstanceUID != ct[0].FrameOfReferenceUID
    assert (ct[0].PatientID, str(ct[0].PatientName), ct[0].PatientBirthDate) == ('NEW-7', 'Roe^Richard', '')
    assert 'SourceImageSequence' not in ct[0] and 'no DICOM identity' in ct[0].DerivationDescription
    back, back_ref = read_image(str(tmp_path / 'out' / 'mr_sct'))
    assert back.shape == data.shape
    np.testing.assert_allclose(back_ref.affine, reference.affine, atol=1e-4)
    with open(tmp_path / 'out' / 'predict_summary.csv', newline='') as f:
        assert next(csv.DictReader(f))['registered'] == 'no'


# ----------------------------------------------------------------------------- bad input

def bad_dicom(case: str, tmp_path: Path) -> tuple[list[str], str]:
    """Arguments of a failing call and the message part it must give."""
    if case == 'output exists':
        source, _ = mr_series(tmp_path)
        (tmp_path / 'out' / 'patient_sct').mkdir(parents=True)
        return ['--input', str(source)], 'patient_sct; pass --overwrite to replace it'
    if case == 'patient name too long':
        source, _ = mr_series(tmp_path)
        return ['--input', str(source), '--patient_name', 'A' * 70], \
            f'--patient_name "{"A" * 70}" does not fit PatientName (DICOM PN)'
    if case == 'MR patient id with a backslash':
        source, _ = mr_series(tmp_path, tags={'0010|0020': 'PAT\\42'})
        return ['--input', str(source)], f'{source} (DICOM series {MR_SERIES}): PatientID "PAT\\42": PatientID (LO)'
    if case == 'not MR':
        source, _ = mr_series(tmp_path, modality='CT')
        return ['--input', str(source)], f'{source} (DICOM series {MR_SERIES}): modality CT, not MR'
    source, _ = mr_series(tmp_path)
    files = sorted(os.listdir(source))
    if case == 'gap':
        os.remove(source / files[4])
        return ['--input', str(source)], (f'{source} (DICOM series {MR_SERIES}): slice {source / files[5]} is 4.000 '
                                          f'mm from the slice before it, where the series starts with 2.000 mm steps')
    ds = pydicom.dcmread(source / files[3])
    if case == 'mixed orientation':
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.save_as(source / files[3])
        return ['--input', str(source)], f'{source} (DICOM series {MR_SERIES}): mixed orientations: slice'
    if case == 'multi-frame':
        for name in files:
            one = pydicom.dcmread(source / name)
            one.SOPClassUID = one.file_meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.4.1'
            one.NumberOfFrames = 2
            one.save_as(source / name)
        return ['--input', str(source)], 'a multi-frame Enhanced MR Image Storage object (1.2.840.10008.5.1.4.1.1.4.1'
    raise AssertionError(case)


CASES = ['gap', 'mixed orientation', 'not MR', 'multi-frame', 'output exists', 'patient name too long',
         'MR patient id with a backslash']


@pytest.mark.parametrize('case', CASES)
def test_bad_dicom_input_is_refused_with_one_line_and_nothing_written(trained, tmp_path, case):
    args, message = bad_dicom(case, tmp_path)
    out = tmp_path / 'out'
    before = sorted(os.listdir(out)) if out.exists() else []
    with pytest.raises(ValueError) as info:
        run_predict(trained, *args, '--output', str(out), '--planes', 'z')
    assert message in str(info.value) and '\n' not in str(info.value)
    assert (sorted(os.listdir(out)) if out.exists() else []) == before


def test_a_gap_is_resampled_onto_the_mr_slice_positions_when_asked(trained, tmp_path):
    source, mr_image = mr_series(tmp_path)
    files = sorted(os.listdir(source))
    os.remove(source / files[4])                     # slices at k = 0..3, 5..9 (2 mm steps, one 4 mm gap)
    lines = run_predict(trained, '--input', str(source), '--output', str(tmp_path / 'out'), '--planes', 'z',
                        '--resample_slices', '--no_qa')
    assert '(10 DICOM CT files)' in lines[0]
    ct = headers(tmp_path / 'out' / 'patient_sct')
    for k, ds in enumerate(ct):                       # even 2 mm steps again, on the MR's slice positions
        np.testing.assert_allclose(pixel_lps(ds, 0, 0), mr_image.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-4)
    assert 'resampled' in ct[0].DerivationDescription
    # the MR itself: slices kept where they were, the missing one the mean of its neighbours (halfway between)
    found = dicom_series(str(source))
    uid = next(iter(found))
    data, affine = resample_slices(read_source_series(str(source), found[uid], uid, 'MR', resample=True))
    original = lr_phantom()
    keep = [0, 1, 2, 3, 5, 6, 7, 8, 9]
    np.testing.assert_array_equal(data[..., keep], original[..., keep])
    np.testing.assert_allclose(data[..., 4], (original[..., 3] + original[..., 5]) / 2)
    np.testing.assert_allclose(affine, read_image(str(tmp_path / 'out' / 'patient_sct'))[1].affine, atol=1e-4)


def test_the_series_folder_appears_whole_or_not_at_all_and_is_replaced_only_when_asked(tmp_path, monkeypatch):
    data = np.zeros((6, 5, 4))
    data[2, 1, 3] = 1500
    reference = reference_image(data.astype(np.float32), np.diag([0.9, 0.9, 3.0, 1.0]))
    folder = tmp_path / 'ct'
    first = write_ct_series(data, reference.affine, str(folder), SeriesIdentity.new('P', 'A^B'),
                            Provenance('one', 'one'))
    with pytest.raises(ValueError, match=f'output folder {folder} already exists; pass --overwrite'):
        write_ct_series(data, reference.affine, str(folder), SeriesIdentity.new(), Provenance('two', 'two'))
    calls = []
    real_save = pydicom.Dataset.save_as

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, 'No space left on device')
        return real_save(self, *args, **kwargs)
    monkeypatch.setattr(pydicom.Dataset, 'save_as', failing_save)
    with pytest.raises(WriteError, match=r'no space left on .* while writing .*ct/CT_0003\.dcm'):
        write_ct_series(data, reference.affine, str(folder), SeriesIdentity.new(), Provenance('two', 'two'),
                        overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ['ct'] and [d.SeriesDescription for d in headers(folder)] == ['one'] * 4
    monkeypatch.setattr(pydicom.Dataset, 'save_as', real_save)
    write_ct_series(data, reference.affine, str(folder), SeriesIdentity.new(), Provenance('two', 'two'),
                    overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ['ct'] and [d.SeriesDescription for d in headers(folder)] == ['two'] * 4
    assert len(first) == 4 and headers(folder)[3].pixel_array[1, 2] == 1500      # row j, column i of slice k
