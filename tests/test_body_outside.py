"""Air outside the body for checkpoints trained with --loss_region body (inference/body_composite.py): the grown
mask by hand, the decision from the stored options, and predict, the DICOM series and test.py on a generator that
outputs a haze everywhere (a constant, as an undertrained body-loss model does outside the body): -1024 HU outside
the body mask grown by the training margin, the haze unchanged inside; and the whole-volume scores of the
ingredients table."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from scipy import ndimage

import test as test_script
from constant_checkpoints import MODEL, constant_checkpoint, hu, tiny_dataset
from inference.body_composite import BodyComposite, composite_for
from scripts import predict
from util.image_io import read_image

HAZE = 0.3                                  # the generator's output everywhere: 1589.6 HU
BODY = ['--loss_region', 'body', '--body_margin_voxels', '1']


@pytest.fixture(scope='module')
def hazy(tmp_path_factory) -> dict:
    """Two constant generators: 'body' trained with the preset's body loss (margin 1 voxel), 'slice' without."""
    root = tmp_path_factory.mktemp('hazy')
    constant_checkpoint(root / 'checkpoints', 'body', HAZE, '--input_nc', '1', *BODY)
    constant_checkpoint(root / 'checkpoints', 'slice', HAZE, '--input_nc', '1')
    return {'data': tiny_dataset(root), 'checkpoints': root / 'checkpoints'}


def regions(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the body mask of test subject 'b', the mask grown by one voxel in 3D: a 3x3x3 cube per voxel, the voxels
    of the z slices that hold body: those translated with --planes z)."""
    mask = read_image(str(data / 'b' / 'mask.nii.gz'))[0] > 0
    translated = np.zeros_like(mask)
    translated[:, :, mask.any(axis=(0, 1))] = True
    grown = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool))
    assert (translated & ~grown).any()
    return mask, grown, translated


def test_kept_region_is_the_mask_grown_by_voxels_and_by_pixels_in_voxels():
    mask = np.zeros((9, 9, 9), bool)
    mask[4, 4, 4] = True
    for grow in (0, 1, 2):
        kept = BodyComposite(grow, 0, 32, 'resize').keep(mask, (1.0, 1.0, 1.0))
        cube = np.zeros_like(mask)
        cube[4 - grow:5 + grow, 4 - grow:5 + grow, 4 - grow:5 + grow] = True
        assert (kept == cube).all(), grow
    # 32-pixel slices of a 16 x 20 x 12 volume: a voxel spans at least 32 / 20 = 1.6 pixels, so 2 pixels reach
    # ceil(2 / 1.6) = 2 voxels and 4 pixels ceil(4 / 1.6) = 3; 'pad' keeps the aspect ratio: with 1 mm voxels
    # the longest side (20) fills 32 pixels, 1.6 per voxel again
    assert BodyComposite(1, 2, 32, 'resize').grow_voxels((16, 20, 12), (1.0, 1.0, 1.0)) == 1 + 2
    assert BodyComposite(0, 4, 32, 'resize').grow_voxels((16, 20, 12), (1.0, 1.0, 1.0)) == 3
    assert BodyComposite(0, 4, 32, 'pad').grow_voxels((16, 20, 12), (1.0, 1.0, 1.0)) == 3


def test_the_stored_loss_region_decides_and_keep_turns_it_off():
    body = {'loss_region': 'body', 'body_margin_voxels': 1, 'body_dilation': 2, 'crop_size': 64,
            'preprocess': 'pad'}
    plain = {'loss_region': 'slice', 'body_margin_voxels': 0, 'body_dilation': 0, 'crop_size': 64}
    assert composite_for('auto', [body]) == BodyComposite(1, 2, 64, 'pad')
    assert composite_for('auto', [plain]) is None                 # its whole-slice L1 asked for air there
    assert composite_for('auto', [{}]) is None                    # a checkpoint from before the body loss
    assert composite_for('keep', [body]) is None
    assert composite_for('air', [plain]) == BodyComposite(0, 0, 64, 'resize')
    wider = {**body, 'body_margin_voxels': 3, 'body_dilation': 0}
    assert composite_for('auto', [plain, body, wider]) == BodyComposite(3, 2, 64, 'resize')   # an ensemble
    with pytest.raises(ValueError, match='--outside_body never: use one of auto, air, keep'):
        composite_for('never', [body])


def run_predict(hazy, tmp_path, name: str, *flags: str) -> np.ndarray:
    out = tmp_path / name
    predict.main(['--name', name, '--checkpoints_dir', str(hazy['checkpoints']), '--gpu_ids', '-1', '--no_progress',
                  '--no_qa', '--planes', 'z', '--input', str(hazy['data'] / 'b'), '--output', str(out), *flags])
    return read_image(str(out / 'b_sct.nii.gz'))[0]


def test_predict_writes_air_outside_the_grown_body_and_keeps_the_inside(hazy, tmp_path):
    mask, grown, translated = regions(hazy['data'])
    fused = run_predict(hazy, tmp_path, 'body')                     # --outside_body auto
    kept = grown & translated                       # (the z slices beyond the body are not translated)
    np.testing.assert_allclose(fused[kept], hu(HAZE), atol=0.05)
    np.testing.assert_allclose(fused[~kept], -1024.0, atol=1e-3)
    before = run_predict(hazy, tmp_path / 'keep', 'body', '--outside_body', 'keep')    # the haze it had before
    np.testing.assert_allclose(before[translated], hu(HAZE), atol=0.05)
    plain = run_predict(hazy, tmp_path / 'plain', 'slice')          # a whole-slice model's output is its own
    np.testing.assert_allclose(plain[translated], hu(HAZE), atol=0.05)
    forced = run_predict(hazy, tmp_path / 'air', 'slice', '--outside_body', 'air')     # its margin: 0, the mask
    np.testing.assert_allclose(forced[mask], hu(HAZE), atol=0.05)
    np.testing.assert_allclose(forced[~mask], -1024.0, atol=1e-3)


def test_the_dicom_series_is_air_outside_the_grown_body(hazy, tmp_path):
    import pydicom
    mask, grown, translated = regions(hazy['data'])
    out = tmp_path / 'dicom'
    predict.main(['--name', 'body', '--checkpoints_dir', str(hazy['checkpoints']), '--gpu_ids', '-1',
                  '--no_progress', '--planes', 'z', '--format', 'dicom',
                  '--input', str(hazy['data'] / 'b'), '--output', str(out)])
    [series] = [p for p in out.iterdir() if p.is_dir() and not p.name.endswith('_qa')]
    [qa_page] = out.glob('*_qa/index.html')                         # the QA page names it among its facts
    assert re.search(r'>outside the body</td>\s*<td[^>]*>air outside the body mask grown by 1 voxel\(s\)',
                     qa_page.read_text())
    nifti = run_predict(hazy, tmp_path / 'nifti', 'body')
    values = []
    for path in series.iterdir():
        ds = pydicom.dcmread(str(path))
        values.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
        # the series says so: a planning system's user reads how its air outside the body was made
        assert ds.DerivationDescription.endswith(' Not an acquired image. Post-processed: air outside the body mask '
                                                 'grown by 1 voxel(s) (--outside_body keep turns it off).')
    values = np.concatenate([v.ravel() for v in values])
    # the series holds the same voxels as the NIfTI output: as many at -1024 HU (air), the rest the haze
    kept = grown & translated
    assert np.sum(np.isclose(values, -1024, atol=1)) == np.sum(~kept) == np.sum(np.isclose(nifti, -1024, atol=1))
    assert np.sum(np.abs(values - hu(HAZE)) < 1) == np.sum(kept)


def test_test_py_writes_air_outside_the_grown_body(hazy, tmp_path):
    mask, grown, _ = regions(hazy['data'])
    results = tmp_path / 'results'
    args = [*MODEL, '--dataroot', str(hazy['data']), '--checkpoints_dir', str(hazy['checkpoints']),
            '--results_dir', str(results), '--name', 'body', '--planes', 'z', '--input_nc', '1']
    test_script.main(args)
    folder = results / 'body' / 'test_latest'
    fused = read_image(str(folder / 'volumes' / 'b_fake_B_fused.nii.gz'))[0]
    kept = grown                                    # (test.py translates every slice: --min_foreground 0)
    np.testing.assert_allclose(fused[kept], hu(HAZE), atol=0.05)
    np.testing.assert_allclose(fused[~kept], -1024.0, atol=1e-3)
    with open(folder / 'metrics.csv') as f:
        [row] = [r for r in csv.DictReader(f) if r['plane'] == 'fused']
    ct = read_image(str(hazy['data'] / 'b' / 'ct.nii.gz'))[0]
    assert float(row['mae']) == pytest.approx(np.abs(hu(HAZE) - ct[mask]).mean(), rel=1e-3)   # inside: unchanged


def test_ingredients_rows_score_the_whole_volume_beside_the_mask(tmp_path):
    """whole PSNR / SSIM: every voxel of the fused volume against the CT, air included (a prediction right inside
    the mask and +600 HU outside it scores PSNR 20 log10(4024 / rmse) over all voxels, and its masked PSNR is
    infinite)."""
    from evaluation.comparison.ingredients import whole_volume_scores
    from inference.export.volume_file import write_image
    from util.image_io import reference_image
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 1500, (12, 14, 10)).astype(np.float32)
    mask = np.zeros(ct.shape, bool)
    mask[2:10, 3:11, 2:8] = True
    pred = np.where(mask, ct, ct + 600).astype(np.float32)
    paths = {}
    for name, volume in (('ct', ct), ('pred', pred)):
        paths[name] = str(tmp_path / f'{name}.nii.gz')
        write_image(volume, reference_image(volume, np.eye(4)), paths[name])
    scores = whole_volume_scores(paths['pred'], paths['ct'])
    clipped = np.clip(pred, -1024, 3000) - np.clip(ct, -1024, 3000)
    assert scores['psnr_whole'] == pytest.approx(20 * np.log10(4024 / np.sqrt(np.mean(clipped ** 2))), rel=1e-5)
    assert 0 < scores['ssim_whole'] < 0.999
    assert whole_volume_scores(paths['ct'], paths['ct'])['ssim_whole'] == pytest.approx(1.0)
