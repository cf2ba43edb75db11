"""Tests for util/evaluation.py: per-slice scoring, and reassembly of slices into NIfTI volumes at the source
geometry and scale, with metrics.csv and the result page."""
import csv
import math
from collections import OrderedDict

import nibabel as nib
import numpy as np
import pytest
import torch

from data.triplanar_aligned_dataset import TriplanarAlignedDataset
from util.evaluation import SliceEvaluator, VolumeEvaluator
from util.html import HTML
from util.metrics import psnr, ssim
from volume_fixtures import make_opt, synthrad_root


def run(root, tmp_path, *args, prediction=lambda b: b, batches=None, visual='fake_B', target='real_B'):
    """test.py's loop without a model: the prediction is a function of the real B slices."""
    ds = TriplanarAlignedDataset(make_opt(root, '--cache_dtype', 'float32', '--output_nc', '1', *args, train=False))
    web = HTML(str(tmp_path / 'web'), 'test')
    evaluator = ds.make_evaluator(ds.opt, str(tmp_path / 'web'))
    assert isinstance(evaluator, VolumeEvaluator)
    for n, data in enumerate(torch.utils.data.DataLoader(ds, batch_size=8)):
        if batches is not None and n >= batches:
            break
        evaluator.add(data, OrderedDict(real_A=data['A'], **{visual: prediction(data['B']), target: data['B']}))
    summary = evaluator.finish(web)
    web.save()
    return ds, summary


def read_rows(tmp_path):
    with open(tmp_path / 'web' / 'metrics.csv') as f:
        return list(csv.DictReader(f))


@pytest.fixture
def root(tmp_path):
    return synthrad_root(tmp_path)


@pytest.mark.parametrize('mode', ['resize', 'pad'])
def test_round_trip_of_b_reproduces_the_source_volume(root, tmp_path, mode):
    ds, summary = run(root, tmp_path, '--preprocess', mode)
    source = nib.load(str(root / 'other' / 'ct.nii.gz'))
    for label in ('x', 'y', 'z', 'fused'):
        out = nib.load(str(tmp_path / 'web' / 'volumes' / f'other_fake_B_{label}.nii.gz'))
        assert out.shape == source.shape and out.get_data_dtype() == np.float32
        np.testing.assert_allclose(out.affine, source.affine)            # LPS, 1 x 1 x 2.5 mm, as the source
        np.testing.assert_allclose(out.get_fdata(), np.clip(source.get_fdata(), -1024, 3000), atol=0.05)
    assert summary['fused']['mae'] < 0.05 and summary['fused']['ssim'] == pytest.approx(1, abs=1e-6)
    rows = read_rows(tmp_path)
    assert sum(r['level'] == 'slice' for r in rows) == len(ds)
    assert [(r['subject'], r['plane']) for r in rows if r['level'] == 'volume'] == \
        [('other', p) for p in ('x', 'y', 'z', 'fused')]
    page = (tmp_path / 'web' / 'index.html').read_text()
    assert page.index('Volume metrics of ct') < page.index('other_volume_synthesized.png')
    for label in ('input', 'synthesized', 'truth', 'error'):
        assert (tmp_path / 'web' / 'images' / f'other_volume_{label}.png').is_file()


def test_constant_error_gives_hand_computed_metrics(root, tmp_path):
    _, summary = run(root, tmp_path, prediction=lambda b: b + 0.1)        # +0.1 in [-1, 1] = +201.2 HU
    for label in ('x', 'y', 'z', 'fused'):
        assert summary[label]['mae'] == pytest.approx(0.1 * 4024 / 2, abs=0.05)
        assert summary[label]['psnr'] == pytest.approx(20 * math.log10(4024 / 201.2), abs=0.01)
    assert summary['slice']['psnr'] == pytest.approx(psnr(np.full(4, 0.1), np.zeros(4)), abs=1e-4)
    rows = [r for r in read_rows(tmp_path) if r['level'] == 'volume']
    assert float(rows[0]['mae']) == pytest.approx(201.2, abs=0.05)


def test_skipped_slices_are_air_and_median_fusion(root, tmp_path):
    ds, _ = run(root, tmp_path, '--min_foreground', '0.3', '--fuse', 'median', '--planes', 'xz')
    planes = {ds[i]['plane'] for i in range(len(ds))}
    assert planes == {'x', 'z'}
    x_slices = {ds[i]['slice_index'] for i in range(len(ds)) if ds[i]['plane'] == 'x'}
    out = nib.load(str(tmp_path / 'web' / 'volumes' / 'other_fake_B_x.nii.gz'))
    canonical = ds.subjects['other'].geometry.to_canonical(out.get_fdata(dtype=np.float32))
    skipped = sorted(set(range(canonical.shape[0])) - x_slices)
    assert skipped and (canonical[skipped] == -1024).all()
    assert not (tmp_path / 'web' / 'volumes' / 'other_fake_B_y.nii.gz').exists()
    fused = nib.load(str(tmp_path / 'web' / 'volumes' / 'other_fake_B_fused.nii.gz')).get_fdata()
    z = nib.load(str(tmp_path / 'web' / 'volumes' / 'other_fake_B_z.nii.gz')).get_fdata()
    np.testing.assert_allclose(fused, (out.get_fdata() + z) / 2, atol=1e-3)   # median of two = mean


def test_mr_target_is_written_in_source_scale(root, tmp_path):
    ds, summary = run(root, tmp_path, '--direction', 'BtoA')
    mr = nib.load(str(root / 'other' / 'mr.nii.gz')).get_fdata()
    window = ds.subjects['other'].maps['mr']
    out = nib.load(str(tmp_path / 'web' / 'volumes' / 'other_fake_B_fused.nii.gz')).get_fdata()
    np.testing.assert_allclose(out, np.clip(mr, window.low, window.high), atol=1e-3 * (window.high - window.low))
    assert summary['fused']['ssim'] == pytest.approx(1, abs=1e-5)
    assert 'Volume metrics of mr (MAE in source units' in (tmp_path / 'web' / 'index.html').read_text()


def test_test_model_visual_fake_without_target_still_gives_volumes(root, tmp_path):
    _, summary = run(root, tmp_path, visual='fake', target='real')
    assert (tmp_path / 'web' / 'volumes' / 'other_fake_fused.nii.gz').is_file()
    assert summary['slice']['n'] == 0 and summary['fused']['mae'] < 0.05
    assert {r['level'] for r in read_rows(tmp_path)} == {'volume'}
    with pytest.raises(ValueError, match='none of fake_B, fake'):
        run(root, tmp_path, visual='rec_A')


def test_incomplete_subject_is_reported_not_written(root, tmp_path, capsys):
    run(root, tmp_path, batches=2)
    assert 'other: 16 of 36 slices were predicted' in capsys.readouterr().err
    assert not (tmp_path / 'web' / 'volumes').exists()
    rows = read_rows(tmp_path)
    assert len(rows) == 16 and {r['level'] for r in rows} == {'slice'}
    assert 'incomplete, not written: other' in (tmp_path / 'web' / 'index.html').read_text()


def test_slice_evaluator_scores_pairs_and_skips_unpaired(tmp_path):
    web = HTML(str(tmp_path / 'web'), 'test')
    ev = SliceEvaluator(None, str(tmp_path / 'web'))
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    fake = (real + 0.05 * torch.randn_like(real)).clamp(-1, 1)
    ev.add({'A_paths': ['/d/a/one.png', '/d/a/two.png']}, OrderedDict(fake_B=fake, real_B=real))
    ev.add({'A_paths': ['/d/a/three.png']}, OrderedDict(fake_B=fake[:1]))      # no target: skipped
    summary = ev.finish(web)
    rows = read_rows(tmp_path)
    assert [r['name'] for r in rows] == ['one', 'two'] and {r['level'] for r in rows} == {'slice'}
    assert float(rows[1]['psnr']) == pytest.approx(psnr(fake[1].numpy(), real[1].numpy()), rel=1e-6)
    assert float(rows[0]['ssim']) == pytest.approx(ssim(fake[0].numpy(), real[0].numpy()), rel=1e-6)
    assert summary['n'] == 2 and summary['ssim'] == pytest.approx(np.mean([float(r['ssim']) for r in rows]))
    empty = SliceEvaluator(None, str(tmp_path / 'empty'))
    empty.add({'A_paths': ['x.png']}, OrderedDict(fake_B=fake[:1]))
    assert empty.finish(web) == {} and not (tmp_path / 'empty').exists()
