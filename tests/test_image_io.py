"""util/image_io.py and data/layouts.py: every format keeps world geometry exactly (ITK's LPS against NIfTI's RAS),
writes are atomic, bad files give clear errors; the dataset layouts of SynthRAD2025 and BraTS 2023+ load."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from data.layouts import find_modality, find_subject_file
from image_fixtures import itk_volume, world_ras, write_dicom_series, write_itk, write_nifti_like
from util.image_io import affine_to_itk, image_stem, itk_affine, read_image
from inference.export.volume_file import write_image

MARKED = [(1, 2, 3), (4, 0, 1), (5, 6, 0)]


def marked_volume() -> np.ndarray:
    """(6, 7, 5) zeros with three voxels marked 100, 200, 300."""
    data = np.zeros((6, 7, 5), np.float32)
    for value, index in enumerate(MARKED, 1):
        data[index] = 100 * value
    return data


def check_marked(data: np.ndarray, affine: np.ndarray, image: sitk.Image) -> None:
    """Each marked voxel holds its value and sits at the RAS point where ITK puts it."""
    for value, index in enumerate(MARKED, 1):
        found = np.argwhere(data == 100 * value)
        assert found.tolist() == [list(index)]
        np.testing.assert_allclose(affine @ [*index, 1], [*world_ras(image, index), 1], atol=1e-5)


@pytest.mark.parametrize('ext', ['.mha', '.mhd', '.nrrd'])
def test_itk_files_read_at_their_world_coordinates(tmp_path, ext):
    image = itk_volume(marked_volume())
    data, ref = read_image(str(write_itk(tmp_path / f'v{ext}', image)))
    assert data.dtype == np.float32 and data.shape == (6, 7, 5)
    check_marked(data, ref.affine, image)


def test_nifti_and_mha_of_one_volume_agree_and_nibabel_matches_itk(tmp_path):
    """A NIfTI written by nibabel from the RAS form of ITK's geometry reads back at the same world points, and
    SimpleITK's own NIfTI reader puts the marked voxels where our affine says (independent LPS/RAS check)."""
    image = itk_volume(marked_volume())
    nii = write_nifti_like(tmp_path / 'v.nii.gz', image)
    data, ref = read_image(str(nii))
    check_marked(data, ref.affine, image)
    itk_read = sitk.ReadImage(str(nii))
    for index in MARKED:
        np.testing.assert_allclose(ref.affine @ [*index, 1], [*world_ras(itk_read, index), 1], atol=1e-4)


def test_dicom_series_reads_at_its_world_coordinates(tmp_path):
    image = itk_volume(marked_volume())
    data, ref = read_image(str(write_dicom_series(tmp_path / 'dicom', image)))
    check_marked(data, ref.affine, image)


@pytest.mark.parametrize('source', ['.nii.gz', '.mha', '.nrrd', 'dicom'])
@pytest.mark.parametrize('ext', ['.nii.gz', '.nii', '.mha', '.mhd', '.nrrd'])
def test_every_format_round_trips_geometry_and_values(tmp_path, source, ext):
    image = itk_volume(marked_volume())
    if source == 'dicom':
        path = write_dicom_series(tmp_path / 'dicom', image)
    elif source == '.nii.gz':
        path = write_nifti_like(tmp_path / 'in.nii.gz', image)
    else:
        path = write_itk(tmp_path / f'in{source}', image)
    data, ref = read_image(str(path))
    out = tmp_path / f'out{ext}'
    write_image(data * 2, ref, str(out))
    back, back_ref = read_image(str(out))
    np.testing.assert_array_equal(back, data * 2)
    np.testing.assert_allclose(back_ref.affine, ref.affine, atol=1e-5)
    check_marked(back / 2, back_ref.affine, image)
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.')]       # no temporary left behind


def test_affine_conversion_is_its_own_inverse():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))           # an oblique direction
    origin, spacing = (1.5, -2.0, 30.0), (0.7, 1.3, 3.0)
    affine = itk_affine(origin, spacing, q.ravel())
    o, s, d = affine_to_itk(affine)
    np.testing.assert_allclose(o, origin)
    np.testing.assert_allclose(s, spacing)
    np.testing.assert_allclose(np.reshape(d, (3, 3)), q, atol=1e-12)


def test_write_is_atomic_when_it_fails(tmp_path, monkeypatch):
    data = marked_volume()
    ref = nib.Nifti1Image(data, np.eye(4))
    target = tmp_path / 'out.mha'
    write_image(data, ref, str(target))
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError('disk full')
    monkeypatch.setattr(sitk, 'WriteImage', broken)
    with pytest.raises(RuntimeError, match='disk full'):
        write_image(data + 1, ref, str(target))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ['out.mha']


# ----------------------------------------------------------------------------- bad files

def test_truncated_mha_is_a_clear_error(tmp_path):
    path = write_itk(tmp_path / 'v.mha', itk_volume(marked_volume()))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match=f'{path}: cannot be read as MetaImage, truncated or corrupt'):
        read_image(str(path))


@pytest.mark.parametrize('shape, dim', [((6, 7), 2), ((6, 7, 5, 2), 4)])
def test_2d_and_4d_images_are_refused(tmp_path, shape, dim):
    path = tmp_path / 'v.mha'
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape[::-1], np.float32), isVector=False), str(path))
    with pytest.raises(ValueError, match=f'{path}: expected a 3D volume, got a {dim}D image'):
        read_image(str(path))


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / 'v.png').write_bytes(b'x')
    with pytest.raises(ValueError, match='v.png: unsupported file type'):
        read_image(str(tmp_path / 'v.png'))
    with pytest.raises(FileNotFoundError, match='nope.mha: file not found'):
        read_image(str(tmp_path / 'nope.mha'))


def test_several_dicom_series_are_listed_and_one_can_be_chosen(tmp_path):
    image = itk_volume(marked_volume())
    write_dicom_series(tmp_path, image, series_uid='1.2.3.4', description='T1 axial')
    write_dicom_series(tmp_path, itk_volume(marked_volume() * 2), series_uid='1.2.3.5', description='T2 axial')
    with pytest.raises(ValueError, match=r'holds 2 DICOM series; choose one with --series UID:\n  1\.2\.3\.4: MR '
                                         r'"T1 axial", 5 files\n  1\.2\.3\.5: MR "T2 axial", 5 files'):
        read_image(str(tmp_path))
    data, _ = read_image(str(tmp_path), series='1.2.3.5')
    assert data.max() == 600
    with pytest.raises(ValueError, match='no DICOM series 9.9; it holds 1.2.3.4, 1.2.3.5'):
        read_image(str(tmp_path), series='9.9')


def test_empty_folder_is_not_a_dicom_series(tmp_path):
    with pytest.raises(ValueError, match='no DICOM series found in this folder'):
        read_image(str(tmp_path))


# ----------------------------------------------------------------------------- layouts

@pytest.mark.parametrize('files, subject, modality, expected', [
    (['mr.mha', 'ct.mha', 'mask.mha'], '1PA001', 'mr', 'mr.mha'),                      # SynthRAD2025 / 2023 task 2
    (['cbct.mha', 'ct.mha'], '2HNA001', 'cbct', 'cbct.mha'),
    (['mr.nii.gz', 'mr.mha'], '1BA001', 'mr', 'mr.nii.gz'),                             # NIfTI first
    (['BraTS-GLI-00000-000-t2f.nii.gz', 'BraTS-GLI-00000-000-t2w.nii.gz'], 'BraTS-GLI-00000-000', 't2f',
     'BraTS-GLI-00000-000-t2f.nii.gz'),                                                 # BraTS 2023+
    (['BraTS2021_00000_flair.nii.gz'], 'BraTS2021_00000', 'flair', 'BraTS2021_00000_flair.nii.gz'),
    (['s1-t2w.nrrd'], 's1', 't2w', 's1-t2w.nrrd'),
])
def test_find_modality_in_every_layout(tmp_path, files, subject, modality, expected):
    folder = tmp_path / subject
    folder.mkdir()
    for f in files:
        (folder / f).write_bytes(b'')
    assert find_modality(str(folder), subject, modality) == str(folder / expected)
    assert find_modality(str(folder), subject, 'pet') is None


def test_modality_as_a_dicom_folder_and_flat_files(tmp_path):
    write_dicom_series(tmp_path / 's1' / 'mr', itk_volume(marked_volume()))
    assert find_modality(str(tmp_path / 's1'), 's1', 'mr') == str(tmp_path / 's1' / 'mr')
    (tmp_path / 's2.mha').write_bytes(b'')
    assert find_subject_file(str(tmp_path), 's2', 'ct') == str(tmp_path / 's2.mha')
    assert image_stem('/a/b/s2.nii.gz') == 's2' and image_stem('/a/dicom/') == 'dicom'
