"""Tests for data/demo_data.py, scripts/make_demo_data.py and the demo dataset triplanar_aligned uses without
--dataroot."""
import time

import nibabel as nib
import numpy as np
import pytest

from data.triplanar_aligned_dataset import TriplanarAlignedDataset
from data import demo_data
from scripts import make_demo_data
from util.geometry import Geometry
from volume_fixtures import make_opt


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    start = time.perf_counter()
    make_demo_data.main(['--out', str(out)])
    return out, time.perf_counter() - start


def load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img


def test_demo_layouts_sizes_and_speed(demo):
    out, seconds = demo
    assert seconds < 10
    synthrad = sorted(p.name for p in (out / 'demo_synthrad').iterdir())
    assert synthrad == [f'demo{i:03d}' for i in range(1, 9)]
    for s in synthrad:
        files = sorted(p.name for p in (out / 'demo_synthrad' / s).iterdir())
        assert files == ['ct.nii.gz', 'mask.nii.gz', 'mr.nii.gz']
    brats = sorted(p.name for p in (out / 'demo_brats').iterdir())
    assert len(brats) == 4
    assert (out / 'demo_brats' / brats[0] / f'{brats[0]}_flair.nii.gz').is_file()
    assert (out / 'demo_brats' / brats[-1] / f'{brats[-1]}_t2.nii').is_file()
    flair, _ = load(out / 'demo_brats' / brats[0] / f'{brats[0]}_flair.nii.gz')
    seg, _ = load(out / 'demo_brats' / brats[0] / f'{brats[0]}_seg.nii.gz')
    assert (flair[flair.shape[0] // 2, :, :][:2] == 0).all() and seg.max() == 2     # skull-stripped, with a lesion


def test_demo_ct_is_int16_hu_with_masks_orientations_and_spacings(demo):
    out, _ = demo
    codes, zooms = set(), set()
    for s in sorted((out / 'demo_synthrad').iterdir()):
        ct, img = load(s / 'ct.nii.gz')
        mask, mask_img = load(s / 'mask.nii.gz')
        assert ct.dtype == np.int16 and ct.min() >= -1024 and ct.max() > 900 and mask.shape == ct.shape
        np.testing.assert_allclose(mask_img.affine, img.affine)
        assert ct[mask == 0].mean() < -900 and 0 < mask.mean() < 1
        codes.add(nib.aff2axcodes(img.affine))
        zooms.add(Geometry.of(img).zooms)
        shape = ct.shape
    assert codes == {('R', 'A', 'S'), ('L', 'P', 'S')} and zooms == {(4.0, 4.0, 4.0), (4.0, 4.0, 5.0)}
    assert max(shape) <= 64                                                          # CPU-sized


def test_bone_and_air_are_both_dark_in_mr_but_not_in_ct(demo):
    out, _ = demo
    ct, _ = load(out / 'demo_synthrad' / 'demo002' / 'ct.nii.gz')
    mr, _ = load(out / 'demo_synthrad' / 'demo002' / 'mr.nii.gz')
    mask, _ = load(out / 'demo_synthrad' / 'demo002' / 'mask.nii.gz')
    bone, air, soft = ct > 700, (ct < -800) & (mask > 0), (ct > 0) & (ct < 100)
    bright = np.percentile(mr[mask > 0], 99)
    assert air.sum() > 10 and bone.sum() > 100                                       # sinus air and skull present
    assert np.median(mr[bone]) < 0.2 * bright and np.median(mr[air]) < 0.2 * bright
    assert np.median(mr[soft]) > 0.4 * bright
    assert np.median(ct[bone]) - np.median(ct[air]) > 1500


def test_demo_is_deterministic(tmp_path):
    for name, seed in (('a', 1), ('b', 1), ('c', 2)):
        demo_data.make_synthrad(str(tmp_path / name), 2, seed)
    a, b, c = (load(tmp_path / n / 'demo002' / 'mr.nii.gz')[0] for n in 'abc')
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_without_dataroot_the_demo_is_made_once_and_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = TriplanarAlignedDataset(make_opt(None, '--planes', 'z', checkpoints=tmp_path / 'ck'))
    root = tmp_path / 'datasets' / 'demo_synthrad'
    assert ds.opt.dataroot == ds.root == demo_data.ensure_demo_dataset('datasets/demo_synthrad')
    assert len(ds.subjects) == 6 and (root / 'splits' / 'train.txt').is_file() and len(ds) > 0
    stamp = (root / 'demo001' / 'ct.nii.gz').stat().st_mtime_ns
    brats = TriplanarAlignedDataset(make_opt(None, '--modality_A', 'flair', '--modality_B', 't2', '--planes', 'z',
                                             checkpoints=tmp_path / 'ck'))
    assert brats.root == 'datasets/demo_brats' and (tmp_path / 'datasets' / 'demo_brats').is_dir()
    assert (root / 'demo001' / 'ct.nii.gz').stat().st_mtime_ns == stamp           # not made again
    item = brats[0]
    assert item['A_paths'].endswith('_flair.nii.gz') and item['B'].shape[-1] == 32
