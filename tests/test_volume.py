"""Tests for util/volume.py: NIfTI checks, canonical orientation, intensity maps, slicing and reassembly."""
import gzip
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from data.demo_data import orient_as
from util.geometry import Geometry
from inference.reassembly import VolumeAssembler
from util.body_mask import body_mask
from util.slicing import fitted_size, from_square, put_slice, slice_spacing, take_slice, to_square
from util.intensity import intensity_map, modality_kind
from util.nifti import load_nifti, save_nifti
from volume_fixtures import phantom, write_nifti


# ----------------------------------------------------------------------------- reading

def test_load_nifti_reads_nii_and_nii_gz_and_drops_trailing_singleton(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for name, arr in (('a.nii', data), ('b.nii.gz', data[..., None])):
        out, img = load_nifti(str(write_nifti(tmp_path / name, arr)))
        assert out.dtype == np.float32 and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize('case, message', [
    ('missing', 'file not found'),
    ('text', 'not a NIfTI file'),
    ('text_gz', 'not a NIfTI file'),
    ('truncated', 'truncated or corrupt'),
    ('truncated_nii', 'truncated or corrupt'),
    ('4d', 'expected a 3D volume, got shape (4, 4, 4, 2) (4D)'),
    ('nan', '1 voxels are NaN or Inf'),
    ('inf', '2 voxels are NaN or Inf'),
])
def test_load_nifti_bad_input_names_file_and_problem(tmp_path, case, message):
    path = tmp_path / ('vol.nii' if case in ('text', 'truncated_nii') else 'vol.nii.gz')
    vol = np.random.default_rng(0).normal(size=(4, 4, 4)).astype(np.float32)
    if case == 'text':
        path.write_text('this is not an image ' * 40)
    elif case == 'text_gz':
        path.write_bytes(gzip.compress(b'not a nifti header' * 40))
    elif case.startswith('truncated'):
        write_nifti(path, np.random.default_rng(0).normal(size=(30, 30, 30)))
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw) // 2])
    elif case == '4d':
        write_nifti(path, np.zeros((4, 4, 4, 2)))
    elif case == 'nan':
        vol[1, 2, 3] = np.nan
        write_nifti(path, vol)
    elif case == 'inf':
        vol[0, 0, 0], vol[3, 3, 3] = np.inf, -np.inf
        write_nifti(path, vol)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        load_nifti(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_save_nifti_keeps_reference_affine_codes_and_writes_float32(tmp_path):
    data, affine = orient_as(np.zeros((5, 6, 7), np.float32), (1.0, 1.5, 2.5), 'LPS')
    ref = nib.Nifti1Image(data.astype(np.int16), affine)
    ref.header.set_slope_inter(2.0, 3.0)
    ref.set_qform(affine, code=1)
    ref.set_sform(affine, code=1)
    nib.save(ref, str(tmp_path / 'ref.nii.gz'))
    _, reference = load_nifti(str(tmp_path / 'ref.nii.gz'))
    values = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32) * 1000
    save_nifti(values, reference, str(tmp_path / 'out.nii.gz'))
    back = nib.load(str(tmp_path / 'out.nii.gz'))
    assert back.get_data_dtype() == np.float32 and back.shape == (5, 6, 7)
    np.testing.assert_allclose(back.affine, affine)
    assert int(back.header['qform_code']) == 1 and int(back.header['sform_code']) == 1
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), values)  # no int16 scaling on the way
    with pytest.raises(ValueError, match='differs from the reference shape'):
        save_nifti(values[:4], reference, str(tmp_path / 'bad.nii.gz'))


# ----------------------------------------------------------------------------- orientation

@pytest.mark.parametrize('axcodes', ['LPS', 'RAS', 'SLP', 'AIR'])
def test_canonical_orientation_undoes_storage_orientation(axcodes):
    canonical = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    spacing = (1.0, 1.5, 2.5)
    stored, affine = orient_as(canonical, spacing, axcodes)
    geometry = Geometry(affine, stored.shape)
    assert geometry.canonical_shape == (5, 6, 7)
    assert geometry.zooms == spacing
    np.testing.assert_array_equal(geometry.to_canonical(stored), canonical)
    np.testing.assert_array_equal(geometry.from_canonical(canonical), stored)
    # the canonical voxel (i, j, k) is where the stored affine puts it: x, y, z grow with i, j, k
    vox = np.argwhere(stored == canonical[4, 0, 0])[0]
    vox0 = np.argwhere(stored == canonical[0, 0, 0])[0]
    assert (affine[:3, :3] @ (vox - vox0))[0] == pytest.approx(4 * spacing[0])


def test_geometry_mismatch_reports_shape_and_affine():
    a = Geometry(np.eye(4), (4, 5, 6))
    assert a.mismatch(Geometry(np.eye(4), (4, 5, 6)), 1e-3) is None
    assert 'shapes differ: (4, 5, 6) vs (4, 5, 7)' in a.mismatch(Geometry(np.eye(4), (4, 5, 7)), 1e-3)
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    assert 'affines differ by up to 0.5 mm' in a.mismatch(Geometry(shifted, (4, 5, 6)), 1e-3)
    assert a.mismatch(Geometry(shifted, (4, 5, 6)), 1.0) is None
    assert Geometry.from_json(a.to_json()).mismatch(a, 0) is None


# ----------------------------------------------------------------------------- intensities

def test_ct_hu_window_maps_to_unit_range_and_back():
    m = intensity_map('ct', np.zeros((2, 2, 2)), np.ones((2, 2, 2), bool), 'ct.nii.gz')
    hu = np.array([-2000, -1024, 988, 3000, 5000], np.float32)
    np.testing.assert_allclose(m.normalise(hu), [-1, -1, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(m.denormalise(np.array([-1, 0, 0.5, 1])), [-1024, 988, 1994, 3000], atol=1e-3)
    custom = intensity_map('ct', np.zeros(1), np.ones(1, bool), 'ct', ct_window=(-100, 100))
    np.testing.assert_allclose(custom.normalise(np.array([-100, 0, 50])), [-1, 0, 0.5], atol=1e-6)


def test_mr_percentiles_inside_mask_and_inverse():
    data = np.full((10, 10, 10), 1e6, np.float32)                # outside the body: must be ignored
    mask = np.zeros(data.shape, bool)
    mask[:, :, :5] = True
    data[mask] = np.arange(500, dtype=np.float32)
    m = intensity_map('mr', data, mask, 'mr.nii.gz', mr_percentiles=(0.5, 99.5))
    assert (m.low, m.high) == pytest.approx((np.percentile(np.arange(500), 0.5), np.percentile(np.arange(500), 99.5)))
    assert m.low == pytest.approx(2.495) and m.high == pytest.approx(496.505)
    y = m.normalise(data[mask])
    assert y.min() == -1 and y.max() == 1
    inside = (data[mask] >= m.low) & (data[mask] <= m.high)
    np.testing.assert_allclose(m.denormalise(y)[inside], data[mask][inside], atol=1e-3)


def test_intensity_map_refuses_constant_or_empty():
    with pytest.raises(ValueError, match=r'mr.nii.gz: intensity window \[5, 5\] is empty'):
        intensity_map('mr', np.full((3, 3, 3), 5.0), np.ones((3, 3, 3), bool), 'mr.nii.gz')
    with pytest.raises(ValueError, match='mr.nii.gz: the body mask is empty'):
        intensity_map('mr', np.ones((3, 3, 3)), np.zeros((3, 3, 3), bool), 'mr.nii.gz')


def test_modality_kind():
    assert modality_kind('ct') == modality_kind('CT') == 'ct'
    assert {modality_kind(m) for m in ('mr', 'flair', 't2', 'cbct')} == {'mr'}


def test_body_mask_fills_dark_inside_and_drops_specks():
    vols = phantom((20, 22, 18))
    mr = vols['mr'].copy()
    mr[0, 0, 0] = 900                                                    # a bright speck in the air
    mask = body_mask([(mr, 'mr')])
    assert not mask[0, 0, 0]
    body = vols['mask'].astype(bool)
    assert (mask == body).mean() > 0.97                                  # dark bone shell filled in
    assert mask[10, 11, 9] and body_mask([(vols['ct'], 'ct')])[10, 11, 9]


# ----------------------------------------------------------------------------- slices

def test_take_slice_shows_anatomy_upright_and_put_slice_inverts():
    vol = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    axial = take_slice(vol, 2, 1)                                        # rows: y (anterior at top), cols: x
    assert axial.shape == (4, 3)
    assert axial[0, 0] == vol[0, 3, 1] and axial[-1, -1] == vol[2, 0, 1]
    sagittal = take_slice(vol, 0, 2)                                     # rows: z (superior at top), cols: y
    assert sagittal.shape == (5, 4) and sagittal[0, 0] == vol[2, 0, 4]
    stacked = take_slice(np.stack([vol, -vol], axis=-1), 1, 2)          # (X, Y, Z, C) -> (C, H, W)
    assert stacked.shape == (2, 5, 3)
    np.testing.assert_array_equal(stacked[1], -take_slice(vol, 1, 2))
    out = np.zeros_like(vol)
    for axis in range(3):
        for i in range(vol.shape[axis]):
            put_slice(out, axis, i, take_slice(vol, axis, i))
        np.testing.assert_array_equal(out, vol)
    assert slice_spacing((1.0, 2.0, 3.0), 0) == (3.0, 2.0) and slice_spacing((1.0, 2.0, 3.0), 2) == (2.0, 1.0)


def test_fitted_size_and_pad_vs_resize_shapes():
    assert fitted_size((40, 48), (5.0, 4.0), 256, 'resize') == (256, 256)
    assert fitted_size((40, 48), (5.0, 4.0), 256, 'pad') == (256, 246)   # 200 mm x 192 mm
    assert fitted_size((10, 20), (1.0, 1.0), 32, 'pad') == (16, 32)
    x = torch.rand(2, 10, 20) * 2 - 1
    padded = to_square(x, (1.0, 1.0), 32, 'pad')
    resized = to_square(x, (1.0, 1.0), 32, 'resize')
    assert padded.shape == resized.shape == (2, 32, 32)
    assert (padded[:, :8] == -1).all() and (padded[:, 24:] == -1).all()
    assert (resized[:, :8] != -1).any()
    with pytest.raises(ValueError, match='unknown slice mode'):
        fitted_size((4, 4), (1.0, 1.0), 8, 'crop')


def _smooth(hw: tuple[int, int]) -> torch.Tensor:
    """(1, h, w) smooth image in [-1, 1]: half a cosine by half a sine plus a ramp."""
    r, c = torch.linspace(0, 1, hw[0])[:, None], torch.linspace(0, 1, hw[1])[None]
    return (0.6 * torch.cos(math.pi * r) * torch.sin(math.pi * c) + 0.3 * (r - c))[None].float()


@pytest.mark.parametrize('mode', ['resize', 'pad'])
@pytest.mark.parametrize('hw, spacing, size, tol', [
    ((182, 230), (1.0, 1.0), 256, 0.002),    # real head volumes at the training size: < 0.002 = 4 HU of CT
    ((300, 280), (1.0, 1.0), 256, 0.002),    # shrunk to 256 and enlarged back
    ((40, 48), (5.0, 4.0), 64, 0.015),
    ((12, 10), (2.5, 1.0), 64, 0.06)])       # 12 voxels: the edge voxels are blurred most
def test_smooth_slice_round_trips_within_tolerance(mode, hw, spacing, size, tol):
    x = _smooth(hw)
    back = from_square(to_square(x, spacing, size, mode), hw, spacing, mode)
    assert back.shape == x.shape
    assert (back - x).abs().max() < tol


def test_pad_is_exact_when_the_slice_fits_the_square():
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 20, 32)).astype(np.float32))
    square = to_square(x, (1.0, 1.0), 32, 'pad')
    assert (square[:, :6] == -1).all() and (square[:, 26:] == -1).all()
    assert torch.equal(from_square(square, (20, 32), (1.0, 1.0), 'pad'), x)


@pytest.mark.parametrize('n', [182, 230, 250, 255])
def test_putting_back_never_amplifies_noise(n):
    """White error at 256 comes back on an n-voxel axis no larger than antialiased linear resampling gives
    (Pillow's bilinear resize, an independent implementation), and every voxel is a convex combination."""
    noise = np.random.default_rng(n).normal(0.0, 0.02, (256, 256)).astype(np.float32)
    back = from_square(torch.from_numpy(noise)[None], (n, n), (1.0, 1.0), 'resize')[0].numpy()
    reference = np.asarray(Image.fromarray(noise).resize((n, n), Image.Resampling.BILINEAR))
    assert back.std() <= 1.1 * reference.std() and back.std() < noise.std()
    weights = from_square(torch.eye(256)[None], (n, 256), (1.0, 1.0), 'resize')[0]   # row i: weights of voxel i
    assert weights.min() >= -1e-7
    torch.testing.assert_close(weights.sum(1), torch.ones(n))


def test_assembler_round_trip_with_missing_slices_and_fusion():
    vol = np.random.default_rng(3).uniform(-1, 1, (8, 9, 5)).astype(np.float32)
    zooms = (1.0, 1.0, 1.0)                             # every slice fits a 9x9 square: 'pad' puts it back exactly
    asm = VolumeAssembler(vol.shape, zooms, 'pad')
    for plane, axis in (('x', 0), ('z', 2)):
        for i in range(vol.shape[axis]):
            if plane == 'z' and i == 2:
                continue                                                 # a skipped slice stays background
            image = to_square(torch.from_numpy(take_slice(vol, axis, i))[None], slice_spacing(zooms, axis), 9, 'pad')
            asm.add(plane, i, image.expand(3, -1, -1))                    # 3 equal channels are averaged
    assert asm.planes == ['x', 'z'] and asm.n_slices == 8 + 4
    np.testing.assert_allclose(asm.volumes['x'], vol, atol=1e-6)
    assert (asm.volumes['z'][:, :, 2] == -1).all()
    np.testing.assert_allclose(asm.fused('mean')[:, :, 2], (vol[:, :, 2] - 1) / 2, atol=1e-4)
    np.testing.assert_allclose(asm.fused('median')[:, :, 0], vol[:, :, 0], atol=1e-4)
    asm.add('x', 0, torch.zeros(9, 9))                                 # added twice: counted once
    assert asm.n_slices == 12
    with pytest.raises(ValueError, match='unknown fusion'):
        asm.fused('max')

