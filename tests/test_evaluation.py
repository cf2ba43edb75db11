"""Tests for evaluation/scoring.py and evaluation/result_page.py: per-slice scoring, and reassembly of slices into
NIfTI volumes at the source geometry and scale, with metrics.csv and the result page."""
import csv
import math
import re
from collections import OrderedDict

import nibabel as nib
import numpy as np
import pytest
import torch

from data.triplanar_aligned_dataset import TriplanarAlignedDataset
from evaluation.result_page import ResultPage
from evaluation.scoring import SliceEvaluator, VolumeEvaluator, make_evaluator
from util.html import HTML
from evaluation.metrics import psnr, ssim
from util.slicing import PLANES, from_square, put_slice, slice_spacing
from volume_fixtures import make_opt, synthrad_root


def run(root, tmp_path, *args, prediction=lambda b: b, batches=None, visual='fake_B', target='real_B', spread=None):
    """test.py's loop without a model: the prediction is a function of the real B slices (``spread`` of them:
    the TTA / ensemble spread a model would give)."""
    ds = TriplanarAlignedDataset(make_opt(root, '--cache_dtype', 'float32', '--output_nc', '1', *args, train=False))
    web = HTML(str(tmp_path / 'web'), 'test')
    evaluator = make_evaluator(ds.opt, str(tmp_path / 'web'), ds)
    assert isinstance(evaluator, VolumeEvaluator)
    page = ResultPage(web, evaluator, ds.opt)
    for n, data in enumerate(torch.utils.data.DataLoader(ds, batch_size=8)):
        if batches is not None and n >= batches:
            break
        for scored in evaluator.add(data, OrderedDict(real_A=data['A'], **{visual: prediction(data['B']),
                                                                           target: data['B']}),
                                    spread=None if spread is None else spread(data['B'])):
            page.add_subject(scored)
    summary = evaluator.finish()
    page.finish()
    web.save()
    return ds, summary


def read_rows(tmp_path):
    with open(tmp_path / 'web' / 'metrics.csv') as f:
        return list(csv.DictReader(f))


@pytest.fixture
def root(tmp_path):
    return synthrad_root(tmp_path)


@pytest.mark.parametrize('mode', ['resize', 'pad'])
def test_volumes_are_the_slices_put_back_at_the_source_geometry_and_scale(root, tmp_path, mode):
    ds, summary = run(root, tmp_path, '--preprocess', mode)
    source = nib.load(str(root / 'other' / 'ct.nii.gz'))
    subject = ds.subjects['other']
    geometry, ct = subject.geometry, subject.maps['ct']
    expected = {}                                                      # each slice put back by hand
    for i in range(len(ds)):
        item = ds[i]
        axis = PLANES[item['plane']]
        u, v = (a for a in range(3) if a != axis)
        hw = (geometry.canonical_shape[v], geometry.canonical_shape[u])
        volume = expected.setdefault(item['plane'], np.full(geometry.canonical_shape, -1.0, np.float32))
        put_slice(volume, axis, item['slice_index'],
                  from_square(item['B'][:1], hw, slice_spacing(geometry.zooms, axis), mode)[0].numpy())
    expected['fused'] = np.mean([expected[p] for p in 'xyz'], axis=0)
    truth = np.clip(source.get_fdata(), -1024, 3000)
    for label in ('x', 'y', 'z', 'fused'):
        out = nib.load(str(tmp_path / 'web' / 'volumes' / f'other_fake_B_{label}.nii.gz'))
        assert out.shape == source.shape and out.get_data_dtype() == np.float32
        np.testing.assert_allclose(out.affine, source.affine)            # LPS, 1 x 1 x 2.5 mm, as the source
        np.testing.assert_allclose(out.get_fdata(), geometry.from_canonical(ct.denormalise(expected[label])),
                                   atol=0.05)
        # the truth itself, resized to 32 and back: blurred about one voxel at the sharp bone of this small phantom
        assert np.abs(out.get_fdata() - truth).mean() < 100
    assert summary['fused']['ssim'] > 0.95
    rows = read_rows(tmp_path)
    assert sum(r['level'] == 'slice' for r in rows) == len(ds)
    assert [(r['subject'], r['plane']) for r in rows if r['level'] == 'volume'] == \
        [('other', p) for p in ('x', 'y', 'z', 'fused')]
    page = (tmp_path / 'web' / 'index.html').read_text()
    assert page.index('Volume metrics of ct') < page.index('other_volume_synthesized.png')
    fused_row = re.findall(r'<td[^>]*>([^<]*)</td>', page[page.index('>fused<') - 40:].split('</tr>')[0])
    assert fused_row[:2] == ['fused', '1'] and fused_row[-3:] == ['-', '-', '-']   # no slices of its own
    for label in ('input', 'synthesized', 'truth', 'error'):
        assert (tmp_path / 'web' / 'images' / f'other_volume_{label}.png').is_file()


def test_constant_error_gives_hand_computed_metrics(root, tmp_path):
    """Putting back is linear with weights summing to 1: +0.1 on every slice is +201.2 HU on every voxel of the
    volume put back, and the metrics are those computed by hand from the written volumes."""
    run(root, tmp_path / 'same')
    _, summary = run(root, tmp_path, prediction=lambda b: b + 0.1)        # +0.1 in [-1, 1] = +201.2 HU
    truth = nib.load(str(root / 'other' / 'ct.nii.gz')).get_fdata()
    mask = nib.load(str(root / 'other' / 'mask.nii.gz')).get_fdata() > 0
    for label in ('x', 'y', 'z', 'fused'):
        same = nib.load(str(tmp_path / 'same' / 'web' / 'volumes' / f'other_fake_B_{label}.nii.gz')).get_fdata()
        out = nib.load(str(tmp_path / 'web' / 'volumes' / f'other_fake_B_{label}.nii.gz')).get_fdata()
        np.testing.assert_allclose(out - same, 0.1 * 4024 / 2, atol=0.05)
        assert summary[label]['mae'] == pytest.approx(np.abs(out - truth)[mask].mean(), abs=0.01)
        mse = ((np.clip(out, -1024, 3000) - np.clip(truth, -1024, 3000))[mask] ** 2).mean()
        assert summary[label]['psnr'] == pytest.approx(10 * math.log10(4024 ** 2 / mse), abs=0.01)
    assert summary['slice']['psnr'] == pytest.approx(psnr(np.full(4, 0.1), np.zeros(4)), abs=1e-4)
    rows = [r for r in read_rows(tmp_path) if r['level'] == 'volume']
    assert float(rows[0]['mae']) == pytest.approx(summary['x']['mae'], abs=0.01)


def test_disagreement_volume_is_the_plane_spread_plus_the_tta_spread(root, tmp_path):
    """One plane: no map without a spread; a constant spread of 0.1 ([-1, 1] units) is 0.1 x 4024 / 2 = 201.2 HU
    on every voxel. Three planes: sqrt(var of the written plane volumes (clipped) + 201.2^2)."""
    volumes = tmp_path / 'web' / 'volumes'
    run(root, tmp_path, '--planes', 'z', '--min_foreground', '0')
    assert not (volumes / 'other_fake_B_disagreement.nii.gz').exists()
    run(root, tmp_path, '--planes', 'z', '--min_foreground', '0', spread=lambda b: torch.full_like(b[:, :1], 0.1))
    out = nib.load(str(volumes / 'other_fake_B_disagreement.nii.gz'))
    assert out.shape == nib.load(str(root / 'other' / 'ct.nii.gz')).shape
    np.testing.assert_allclose(out.get_fdata(), 201.2, atol=0.05)
    run(root, tmp_path, '--min_foreground', '0', spread=lambda b: torch.full_like(b[:, :1], 0.1))
    planes = np.stack([np.clip(nib.load(str(volumes / f'other_fake_B_{p}.nii.gz')).get_fdata(), -1024, 3000)
                       for p in 'xyz'])
    expected = np.sqrt(planes.var(axis=0) + 201.2 ** 2)
    assert planes.var(axis=0).max() > 100                                       # the planes do disagree
    np.testing.assert_allclose(nib.load(str(volumes / 'other_fake_B_disagreement.nii.gz')).get_fdata(), expected,
                               atol=0.05)


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
    span = window.high - window.low                                      # in MR units, not [-1, 1] or HU
    assert window.low - 1e-3 * span <= out.min() and out.max() <= window.high + 1e-3 * span
    assert np.abs(out - np.clip(mr, window.low, window.high)).mean() < 0.1 * span     # blurred by the round trip
    assert summary['fused']['ssim'] > 0.8
    assert 'Volume metrics of mr (MAE in source units' in (tmp_path / 'web' / 'index.html').read_text()


def test_test_model_visual_fake_without_target_still_gives_volumes(root, tmp_path):
    _, summary = run(root, tmp_path, visual='fake', target='real')
    assert (tmp_path / 'web' / 'volumes' / 'other_fake_fused.nii.gz').is_file()
    assert summary['slice']['n'] == 0 and summary['fused']['mae'] < 250   # the truth put back, blurred (see above)
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
    summary = ev.finish()
    ResultPage(web, ev, None).finish()
    web.save()
    rows = read_rows(tmp_path)
    assert [r['name'] for r in rows] == ['one', 'two'] and {r['level'] for r in rows} == {'slice'}
    assert float(rows[1]['psnr']) == pytest.approx(psnr(fake[1].numpy(), real[1].numpy()), rel=1e-6)
    assert float(rows[0]['ssim']) == pytest.approx(ssim(fake[0].numpy(), real[0].numpy()), rel=1e-6)
    assert summary['n'] == 2 and summary['ssim'] == pytest.approx(np.mean([float(r['ssim']) for r in rows]))
    table = (tmp_path / 'web' / 'index.html').read_text(encoding='utf-8')
    assert 'Per-slice metrics (fake_B vs real_B' in table
    assert f'{np.mean([float(r["psnr"]) for r in rows]):.4f} ± {np.std([float(r["psnr"]) for r in rows]):.4f}' in table
    empty = SliceEvaluator(None, str(tmp_path / 'empty'))
    empty.add({'A_paths': ['x.png']}, OrderedDict(fake_B=fake[:1]))
    assert empty.finish() == {} and not (tmp_path / 'empty').exists()


@pytest.mark.parametrize('n, expected', [
    (2, {'x': {4, 7}, 'y': {5, 8}, 'z': {3, 6}}),     # body slices x 1-10, y 2-11, z 1-8: at 1/3 and 2/3 of each
    (0, {'x': set(range(12)), 'y': set(range(14)), 'z': set(range(10))})])          # 0: every slice
def test_page_slices_picks_evenly_spaced_body_slices_per_plane(root, n, expected):
    """--page_slices N: the slices test.py puts on the page for each subject and plane, by hand for the phantom's
    body (its mask: x 1..10, y 2..11, z 1..8 of 12 x 14 x 10, canonical): N evenly spaced inside the body."""
    ds = TriplanarAlignedDataset(make_opt(root, '--output_nc', '1', '--page_slices', str(n), train=False))
    page = ResultPage(None, make_evaluator(ds.opt, str(root.parent / 'web'), ds, write=False), ds.opt)
    shown = {p: set() for p in 'xyz'}
    for data in torch.utils.data.DataLoader(ds, batch_size=7):
        for k in range(len(data['subject'])):
            assert data['subject'][k] == 'other'
            if page.shows(data, k):
                shown[data['plane'][k]].add(int(data['slice_index'][k]))
    assert shown == expected


def test_the_result_pages_summary_cells():
    """mean ± std of the finite values (population std, by hand: 2 ± 1), one value alone (no spread of one), '-'
    without any."""
    from evaluation.result_page import mean_std
    assert mean_std([1.0, 3.0, float('inf')]) == '2.0000 ± 1.0000'
    assert mean_std([0.5, float('nan')]) == '0.5000'
    assert mean_std([float('inf')]) == mean_std([]) == '-'
