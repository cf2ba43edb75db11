"""Tests for data/triplanar_aligned_dataset.py: layouts, geometry, intensities, slices, splits, the slice
store and every kind of bad input."""
import os
import time

import numpy as np
import pytest
import torch

from data.splits import load_split, read_splits, split_subjects, write_splits
from data.augmentation import augment
from data.triplanar_aligned_dataset import TriplanarAlignedDataset
from scripts import make_splits
from util.slicing import take_slice
from volume_fixtures import SHAPE, make_opt, phantom, synthrad_root, write_nifti, write_subject


@pytest.fixture
def root(tmp_path):
    return synthrad_root(tmp_path)


def dataset(root, *args, train=True):
    return TriplanarAlignedDataset(make_opt(root, *args, train=train))


def items_of(ds, subject):
    return {(it['plane'], it['slice_index']): it for it in (ds[i] for i in range(len(ds))) if it['subject'] == subject}


# ----------------------------------------------------------------------------- layouts and items

def test_synthrad_items_shapes_ranges_and_metadata(root):
    ds = dataset(root, '--min_foreground', '0', '--input_nc', '3', '--output_nc', '1')
    assert len(ds) == 2 * sum(SHAPE)                       # every slice of every plane of both subjects
    it = ds[0]
    assert it['A'].shape == (3, 32, 32) and it['B'].shape == (1, 32, 32) and it['mask'].shape == (1, 32, 32)
    assert torch.equal(it['A'][0], it['A'][1]) and torch.equal(it['A'][0], it['A'][2])   # gray repeated for SAM
    assert it['A'].dtype == it['B'].dtype == torch.float32
    assert it['A'].min() >= -1 and it['A'].max() <= 1 and it['B'].min() >= -1 and it['B'].max() <= 1
    assert it['A_paths'] == str(root / 'lps' / 'mr.nii.gz') and it['B_paths'] == str(root / 'lps' / 'ct.nii.gz')
    assert (it['subject'], it['plane'], it['slice_index'], it['name']) == ('lps', 'x', 0, 'lps_x000')
    middle = items_of(ds, 'ras')[('z', 5)]['mask'][0]
    assert middle.dtype == torch.bool and middle[16, 16] and not middle[0, 0]
    assert [ds[i]['plane'] for i in (0, SHAPE[0], SHAPE[0] + SHAPE[1])] == ['x', 'y', 'z']


def test_ct_hu_and_mr_percentile_values_reach_the_items(tmp_path):
    data = tmp_path / 'data'
    shape = (14, 14, 6)
    vols = phantom(shape)
    body = vols['mask'].astype(bool)
    ct = np.where(body, 988.0, -1000.0)
    ct[7, 7, :] = 4000.0                                   # above the window: clipped to 1
    write_subject(data, 's', volumes={'ct': ct, 'mr': vols['mr'], 'mask': vols['mask']})
    write_splits(str(data), {'train': ['s']})
    ds = dataset(data, '--planes', 'z', '--crop_size', '14', '--min_foreground', '0', '--cache_dtype', 'float32',
                 '--input_nc', '1', '--output_nc', '1')
    it = items_of(ds, 's')[('z', 3)]
    expected = take_slice(np.where(body, 0.0, (-1000 + 1024) / 4024 * 2 - 1), 2, 3)
    expected[take_slice(ct, 2, 3) == 4000] = 1.0
    np.testing.assert_allclose(it['B'][0].numpy(), expected, atol=1e-6)
    low, high = np.percentile(vols['mr'][body], [0.5, 99.5])
    mr = take_slice(vols['mr'], 2, 3)
    np.testing.assert_allclose(it['A'][0].numpy(), np.clip((mr - low) / (high - low) * 2 - 1, -1, 1), atol=1e-5)
    assert ds.subjects['s'].maps['ct'].low == -1024 and ds.subjects['s'].maps['mr'].low == pytest.approx(low)


@pytest.mark.parametrize('direction', ['AtoB', 'BtoA'])
def test_brats_layout_nii_and_nii_gz_and_direction(tmp_path, direction):
    data = tmp_path / 'data'
    vols = phantom()
    for name, ext in (('BraTS_001', '.nii.gz'), ('BraTS_002', '.nii')):
        write_subject(data, name, volumes={'flair': vols['mr'], 't2': 1000 - vols['mr'], 'seg': vols['mask']},
                      brats=True, ext=ext)
    write_splits(str(data), {'train': ['BraTS_001', 'BraTS_002']})
    ds = dataset(data, '--modality_A', 'flair', '--modality_B', 't2', '--direction', direction, '--planes', 'z')
    by_name = {ds[i]['subject']: ds[i] for i in range(len(ds))}
    src, tgt = ('flair', 't2') if direction == 'AtoB' else ('t2', 'flair')
    assert by_name['BraTS_001']['A_paths'] == str(data / 'BraTS_001' / f'BraTS_001_{src}.nii.gz')
    assert by_name['BraTS_002']['B_paths'] == str(data / 'BraTS_002' / f'BraTS_002_{tgt}.nii')
    it = ds[len(ds) // 4]
    if direction == 'AtoB':       # flair bright where t2 (1000 - flair) is dark inside the body
        inside = it['mask'][0]
        assert np.corrcoef(it['A'][0][inside], it['B'][0][inside])[0, 1] < -0.9
    assert ds.source == src and ds.target == tgt


def test_canonical_reorientation_gives_the_same_slices(tmp_path):
    data = tmp_path / 'data'
    write_subject(data, 'ras', spacing=(1.0, 1.5, 2.5))
    write_subject(data, 'pil', spacing=(1.0, 1.5, 2.5), axcodes='PIL')   # axes permuted and flipped on disk
    write_splits(str(data), {'train': ['pil', 'ras']})
    ds = dataset(data, '--min_foreground', '0', '--preprocess', 'pad')
    assert ds.subjects['pil'].geometry.shape != ds.subjects['ras'].geometry.shape
    assert ds.subjects['pil'].geometry.zooms == ds.subjects['ras'].geometry.zooms == (1.0, 1.5, 2.5)
    ras, pil = items_of(ds, 'ras'), items_of(ds, 'pil')
    assert ras.keys() == pil.keys() and len(ras) == sum(SHAPE)
    for key in ras:
        for k in ('A', 'B', 'mask'):
            assert torch.equal(ras[key][k], pil[key][k]), (key, k)


def test_pad_keeps_physical_aspect_ratio_and_resize_fills(root):
    pad = items_of(dataset(root, '--preprocess', 'pad', '--min_foreground', '0'), 'lps')
    resize = items_of(dataset(root, '--min_foreground', '0'), 'lps')
    # sagittal slice of lps: rows z (10 x 2.5 mm = 25 mm), columns y (14 x 1 mm): 32 x 18 pixels, centred
    a = pad[('x', 6)]['A'][0]
    assert (a[:, :7] == -1).all() and (a[:, 25:] == -1).all() and (a[:, 7:25] > -1).any()
    assert (pad[('x', 6)]['mask'][0][:, :7] == 0).all()
    # axial slice: rows y (14 mm), columns x (12 mm): 32 x 27
    assert (pad[('z', 5)]['A'][0][:, :2] == -1).all() and (pad[('z', 5)]['A'][0][:, 2:30] > -1).any()
    assert (resize[('x', 6)]['A'][0][:, :7] > -1).any()
    assert pad[('x', 6)]['A'].shape == resize[('x', 6)]['A'].shape == (3, 32, 32)


def test_min_foreground_skips_slices_by_body_fraction(root):
    mask = phantom()['mask'].astype(bool)
    ds = dataset(root, '--min_foreground', '0.2', '--planes', 'xz')
    expected = {p: {i for i in range(SHAPE[a]) if mask.take(i, axis=a).mean() >= 0.2} for p, a in (('x', 0), ('z', 2))}
    got = items_of(ds, 'ras')
    assert {p: {i for q, i in got if q == p} for p in 'xz'} == expected
    assert 0 < len(expected['x']) < SHAPE[0]
    assert dataset(root).opt.min_foreground == dataset(root, train=False).opt.min_foreground == 0.0   # the paper's


def test_loader_workers_give_the_same_batches(root):
    ds = dataset(root, '--planes', 'y')
    batches = [next(iter(torch.utils.data.DataLoader(ds, batch_size=5, num_workers=w))) for w in (0, 2)]
    assert batches[0]['name'] == batches[1]['name']
    assert torch.equal(batches[0]['A'], batches[1]['A']) and torch.equal(batches[0]['mask'], batches[1]['mask'])


def _eroded(mask: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """``mask`` (H, W) bool shrunk by ``steps`` pixels (3x3 minimum, repeated)."""
    m = mask.float()[None, None]
    for _ in range(steps):
        m = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)
    return m[0, 0] > 0.5


def test_augmentation_keeps_a_b_and_mask_aligned_on_a_phantom(tmp_path):
    """CT is a known affine function of MR inside the body (ct = 2 mr - 500), so after any resampling the items
    must satisfy B = alpha A + beta wherever the body mask holds, and A must be background (-1) wherever the mask
    does not: a B or mask moved differently from A breaks one of the two."""
    shape = (20, 22, 18)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing='ij')
    body = sum((g / 0.8) ** 2 for g in grids) < 1
    mr = np.where(body, 500 + 150 * grids[0] + 80 * grids[1] * grids[2], 0.0).astype(np.float32)
    ct = np.where(body, 2 * mr - 500, -1000.0).astype(np.float32)
    write_subject(tmp_path / 'data', 's', volumes={'mr': mr, 'ct': ct, 'mask': body.astype(np.uint8)})
    write_splits(str(tmp_path / 'data'), {'train': ['s']})
    args = ('--cache_dtype', 'float32', '--mr_percentiles', '0', '100', '--input_nc', '1', '--output_nc', '1')
    plain = dataset(tmp_path / 'data', *args)
    ds = dataset(tmp_path / 'data', *args, '--augment')
    low, high = float(mr[body].min()), float(mr[body].max())
    assert (ds.subjects['s'].maps['mr'].low, ds.subjects['s'].maps['mr'].high) == (low, high)
    # B = ((2 mr - 500) + 1024) / 4024 * 2 - 1 with mr = (A + 1) / 2 * (high - low) + low
    alpha = (high - low) / 2 * 2 / 4024 * 2
    beta = ((2 * ((high - low) / 2 + low) - 500) + 1024) / 4024 * 2 - 1
    torch.manual_seed(3)
    moved = 0
    for i in range(0, len(ds), 3):
        item = ds[i]
        a, b, mask = item['A'][0], item['B'][0], item['mask'][0]
        moved += not torch.equal(item['mask'], plain[i]['mask'])
        inside, outside = _eroded(mask), _eroded(~mask, 3)
        if inside.any():
            assert float((b - (alpha * a + beta))[inside].abs().max()) < 1e-4, item['name']
        assert float((a[outside] + 1).abs().max()) < 1e-4, item['name']
        assert inside.sum() + outside.sum() > 0.3 * mask.numel()     # most pixels are checked
    assert moved > 5          # the augmentation did move the slices


def test_augmentation_moves_a_b_and_mask_together_and_is_off_at_test(root):
    torch.manual_seed(0)
    x = torch.rand(1, 24, 24).expand(3, -1, -1) * 2 - 1
    y = augment(x, flip=True)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])
    assert torch.allclose(augment(x, flip=False, max_degrees=0, max_scale=0, max_shift=0), x, atol=1e-5)
    plain = dataset(root, '--planes', 'z')[4]
    torch.manual_seed(1)
    assert not torch.equal(dataset(root, '--planes', 'z', '--augment')[4]['A'], plain['A'])
    test_opt = ('--planes', 'z', '--phase', 'train', '--augment')
    assert torch.equal(dataset(root, *test_opt, train=False)[4]['A'], dataset(root, *test_opt[:4], train=False)[4]['A'])


# ----------------------------------------------------------------------------- slice store

def test_store_is_built_once_and_rebuilt_when_a_source_changes(root, monkeypatch):
    ds = dataset(root)
    npy = os.path.join(ds.subjects['ras'].store, 'volumes.npy')
    first = os.stat(npy).st_mtime_ns
    time.sleep(0.01)
    assert os.stat(os.path.join(dataset(root).subjects['ras'].store, 'volumes.npy')).st_mtime_ns == first
    monkeypatch.chdir(root.parent)                                        # same data, relative --dataroot
    relative = TriplanarAlignedDataset(make_opt(root.relative_to(root.parent), checkpoints=root.parent / 'ck'))
    assert relative[0]['A_paths'] == os.path.join('data', 'lps', 'mr.nii.gz')
    assert os.stat(npy).st_mtime_ns == first
    write_subject(root, 'ras', volumes={'ct': phantom(seed=9)['ct']})
    rebuilt = dataset(root)
    assert os.stat(npy).st_mtime_ns != first
    assert rebuilt.store_root == ds.store_root
    assert dataset(root, '--ct_window', '-1000', '2000').store_root != ds.store_root
    assert dataset(root, '--cache_dir', str(root.parent / 'cache')).store_root.startswith(str(root.parent / 'cache'))


# ----------------------------------------------------------------------------- splits

def names(n):
    return [f's{i:02d}' for i in range(n)]


def test_default_split_is_8_1_1_deterministic_and_disjoint(tmp_path):
    splits = split_subjects(names(20), 2024)
    assert {k: len(v) for k, v in splits.items()} == {'test': 2, 'val': 2, 'train': 16}
    assert sorted(sum(splits.values(), [])) == names(20)
    assert split_subjects(names(20), 2024) == splits and split_subjects(names(20), 7) != splits
    assert {k: len(v) for k, v in split_subjects(names(180), 2024).items()} == {'test': 18, 'val': 18, 'train': 144}
    assert {k: len(v) for k, v in split_subjects(names(8), 2024).items()} == {'test': 1, 'val': 1, 'train': 6}


def test_split_is_written_then_reused(tmp_path):
    root = tmp_path / 'data'
    for s in names(10):
        (root / s).mkdir(parents=True)
    test = load_split(str(root), 'test', names(10), 2024)
    files = read_splits(str(root))
    assert sorted(files) == ['test', 'train', 'val'] and files['test'] == test
    assert not set(files['train']) & set(files['test']) and not set(files['val']) & set(files['test'])
    (root / 'splits' / 'test.txt').write_text('# hand-made\ns00\n\ns01\n')
    (root / 'splits' / 'train.txt').write_text('s02\n')
    assert load_split(str(root), 'test', names(10), seed=1) == ['s00', 's01']   # the file wins over the seed


def test_dataset_makes_the_split_and_uses_it(tmp_path):
    data = tmp_path / 'data'
    for i in range(3):
        write_subject(data, f'p{i}')
    train = dataset(data, '--planes', 'z')
    files = read_splits(str(data))
    assert set(train.subjects) == set(files['train']) and len(files['train']) == 1
    assert set(dataset(data, '--planes', 'z', train=False).subjects) == set(files['test'])


@pytest.mark.parametrize('files, phase, message', [
    ({'train': ['s00', 's01'], 'test': ['s01']}, 'test', 'subject s01 is in two splits'),
    ({'train': ['s00']}, 'test', 'test.txt not found (--phase test)'),
    ({'train': ['s00', 'nobody']}, 'train', 'lists subjects with no folder under'),
    ({'train': ['s00'], 'test': []}, 'test', 'is empty: no subjects for --phase test'),
])
def test_bad_splits(tmp_path, files, phase, message):
    for s in names(3):
        (tmp_path / s).mkdir()
    write_splits(str(tmp_path), files)
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace('(', r'\(').replace(')', r'\)')):
        load_split(str(tmp_path), phase, names(3), 2024)


def test_make_splits_script_writes_and_refuses_to_overwrite(tmp_path):
    for s in names(10):
        (tmp_path / s).mkdir()
    splits = make_splits.main(['--dataroot', str(tmp_path), '--seed', '3'])
    assert read_splits(str(tmp_path)) == splits == split_subjects(names(10), 3)
    with pytest.raises(ValueError, match='already holds'):
        make_splits.main(['--dataroot', str(tmp_path)])
    write_splits(str(tmp_path), {'extra': ['s09']})
    assert read_splits(str(tmp_path)) != splits
    make_splits.main(['--dataroot', str(tmp_path), '--seed', '3', '--force'])
    assert read_splits(str(tmp_path)) == splits


# ----------------------------------------------------------------------------- bad input

def break_subject(root, case):
    """Make subject ``bad`` wrong in one way; returns (file named in the error, message part)."""
    folder = write_subject(root, 'bad')
    ct = folder / 'ct.nii.gz'
    vols = phantom()
    if case == 'missing modality':
        ct.unlink()
        return folder, ('modality "ct" is missing (looked for ct.<ext>, bad_ct.<ext>, bad-ct.<ext>, ct/ (DICOM) '
                        'with <ext> one of .nii.gz .nii .mha')
    if case == 'shape':
        write_nifti(ct, vols['ct'][:, :, :8])
        return folder / 'mr.nii.gz', f'(shape {SHAPE}) and {ct} (shape (12, 14, 8)) are not on the same voxel grid'
    if case == 'affine':
        write_nifti(ct, vols['ct'], np.diag([1.0, 1.0, 1.2, 1.0]))
        return ct, 'affines differ by up to'
    if case == '4D':
        write_nifti(ct, np.stack([vols['ct']] * 2, -1))
        return ct, 'expected a 3D volume, got shape (12, 14, 10, 2) (4D)'
    if case == 'NaN':
        bad = vols['ct'].copy()
        bad[3, 3, 3] = np.nan
        write_nifti(ct, bad)
        return ct, '1 voxels are NaN or Inf'
    if case == 'truncated':
        raw = ct.read_bytes()
        ct.write_bytes(raw[:len(raw) * 2 // 3])
        return ct, 'truncated or corrupt'
    if case == 'not NIfTI':
        ct.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(500))
        return ct, 'not a NIfTI file'
    if case == 'mask':
        write_nifti(folder / 'mask.nii.gz', vols['mask'][:10])
        return folder / 'mask.nii.gz', 'does not match'
    raise AssertionError(case)


BAD_CASES = ['missing modality', 'shape', 'affine', '4D', 'NaN', 'truncated', 'not NIfTI', 'mask']


@pytest.mark.parametrize('case', BAD_CASES)
def test_bad_subject_gives_one_clear_error(root, case):
    path, message = break_subject(root, case)
    write_splits(str(root), {'train': ['ras', 'bad']})
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        dataset(root)
    assert str(path) in str(err.value) and message in str(err.value)


def test_skip_bad_subjects_goes_on_and_lists_them(tmp_path, capsys):
    data = tmp_path / 'data'
    write_subject(data, 'good')
    bad = []
    for case in BAD_CASES:
        name = 'bad_' + case.replace(' ', '_')
        break_subject(data, case)
        os.rename(data / 'bad', data / name)
        bad.append(name)
    write_splits(str(data), {'train': ['good', *bad]})
    ds = dataset(data, '--skip_bad_subjects')
    assert list(ds.subjects) == ['good'] and sorted(ds.skipped) == sorted(bad)
    err = capsys.readouterr().err
    assert f'skipped {len(bad)} subject(s)' in err and all(b in err for b in bad)
    assert {ds[i]['subject'] for i in range(len(ds))} == {'good'}


def test_no_subjects_and_bad_flags(tmp_path, root):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no subject folders found'):
        dataset(tmp_path / 'empty')
    with pytest.raises(FileNotFoundError, match='folder not found'):
        dataset(tmp_path / 'nowhere')
    with pytest.raises(ValueError, match='--planes "xx"'):
        dataset(root, '--planes', 'xx')
    with pytest.raises(ValueError, match='supports --preprocess resize or pad'):
        dataset(root, '--preprocess', 'crop')
    with pytest.raises(ValueError, match='reaches --min_foreground'):
        dataset(root, '--min_foreground', '1.01')
