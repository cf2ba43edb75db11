"""scripts/evaluate.py: outside NIfTI volumes scored with the toolkit's metrics (hand-checked values), the file
layouts it reads, clear errors for volumes that do not match, and --append into a comparison's table."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import ROOT, run_script
from scripts import evaluate
from util.json_file import write_json
from evaluation.metrics import volume_metrics

EVALUATE = str(ROOT / 'scripts' / 'evaluate.py')
SHAPE = (12, 13, 14)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def head() -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume in HU (air -1000, tissue 40, a brighter band) and its body mask (a box)."""
    ct = np.full(SHAPE, -1000.0, np.float32)
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 2:11, 2:12] = True
    ct[mask] = 40.0
    ct[2:10, 2:11, 6:8] = 900.0
    return ct, mask


def test_scores_flat_folders_by_hand(tmp_path: Path):
    """pred = truth + 100 HU inside the mask: MAE 100 HU, PSNR 20 log10(4024 / 100); the SSIM is evaluation.metrics'."""
    ct, mask = head()
    pred = np.where(mask, ct + 100.0, ct)
    for s in ('a', 'b'):
        save(tmp_path / 'gt' / f'{s}.nii.gz', ct)
        save(tmp_path / 'masks' / f'{s}.nii.gz', mask.astype(np.uint8))
        save(tmp_path / 'pred' / f'{s}.nii.gz', pred)
    out = tmp_path / 'scores.csv'
    rows = evaluate.main(['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt'),
                          '--mask', str(tmp_path / 'masks'), '--out', str(out)])
    assert [r['subject'] for r in rows] == ['a', 'b'] and all(r['plane'] == 'fused' for r in rows)
    assert rows[0]['mae'] == pytest.approx(100.0)
    assert rows[0]['psnr'] == pytest.approx(20 * math.log10(4024 / 100))
    assert rows[0]['ssim'] == pytest.approx(volume_metrics(pred, ct, mask)['ssim']) and rows[0]['ssim'] < 1
    with open(out, newline='') as f:
        written = list(csv.DictReader(f))
    assert [(r['level'], r['subject'], float(r['mae'])) for r in written] == \
        [('volume', 'a', 100.0), ('volume', 'b', 100.0)]


def test_dataset_layout_pattern_and_mask_from_the_subject_folder(tmp_path: Path):
    """Ground truth in the SynthRAD2023 layout with its mask.nii.gz; predictions named like test.py's volumes.
    The prediction is wrong only outside the mask, so inside it everything is perfect."""
    ct, mask = head()
    save(tmp_path / 'data' / 'sub1' / 'ct.nii.gz', ct)
    save(tmp_path / 'data' / 'sub1' / 'mask.nii.gz', mask.astype(np.uint8))
    save(tmp_path / 'pred' / 'sub1_fake_B_fused.nii.gz', np.where(mask, ct, 500.0))
    save(tmp_path / 'pred' / 'sub1_fake_B_z.nii.gz', ct + 1)                       # not matched by the pattern
    rows = evaluate.main(['--pred', str(tmp_path / 'pred'), '--pred_pattern', '{subject}_fake_B_fused.nii.gz',
                          '--gt', str(tmp_path / 'data')])
    assert len(rows) == 1 and rows[0]['subject'] == 'sub1'
    assert rows[0]['mae'] == 0.0 and rows[0]['psnr'] == math.inf and rows[0]['ssim'] == pytest.approx(1.0)


def test_mr_target_uses_its_normalisation_window(tmp_path: Path):
    """For an MR target (BraTS layout <subject>_t2.nii.gz) PSNR/SSIM use the target's 0.5-99.5 percentile window
    inside the mask, as test.py scores MR volumes."""
    rng = np.random.default_rng(0)
    t2 = rng.uniform(100, 900, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:11, 1:12, 1:13] = 1
    pred = t2 + rng.normal(0, 20, SHAPE).astype(np.float32)
    save(tmp_path / 'brats' / 'P1' / 'P1_t2.nii.gz', t2)
    save(tmp_path / 'brats' / 'P1' / 'P1_mask.nii.gz', mask)
    save(tmp_path / 'pred' / 'P1.nii.gz', pred)
    row = evaluate.main(['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'brats'), '--modality', 't2'])[0]
    low, high = np.percentile(t2[mask > 0], (0.5, 99.5))
    expected = volume_metrics(pred, t2, mask, (float(low), float(high)))
    assert (row['subject'], row['plane']) == ('P1', 'fused')
    assert {m: row[m] for m in expected} == pytest.approx(expected)
    assert row['psnr'] != pytest.approx(volume_metrics(pred, t2, mask)['psnr'])   # not the CT window


@pytest.mark.parametrize('pred_shape, pred_affine, words', [
    ((12, 13, 15), AFFINE, ['a.nii.gz does not match the ground truth', 'shapes differ: (12, 13, 14) vs (12, 13, 15)']),
    (SHAPE, np.diag([1.5, 1.5, 2.5, 1.0]), ['a.nii.gz does not match the ground truth', 'affines differ']),
])
def test_mismatched_predictions_are_refused(tmp_path: Path, pred_shape, pred_affine, words):
    ct, _ = head()
    save(tmp_path / 'gt' / 'a.nii.gz', ct)
    save(tmp_path / 'pred' / 'a.nii.gz', np.zeros(pred_shape), pred_affine)
    with pytest.raises(ValueError) as err:
        evaluate.main(['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt')])
    assert all(w in str(err.value) for w in words), str(err.value)
    proc = run_script(EVALUATE, '--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt'), cwd=tmp_path,
                      check=False)
    assert proc.returncode != 0 and 'evaluate.py: error:' in proc.stderr and words[1] in proc.stderr


def test_a_mask_off_the_ground_truths_grid_is_refused_naming_both_files(tmp_path: Path):
    ct, mask = head()
    gt = save(tmp_path / 'gt' / 'a.nii.gz', ct)
    save(tmp_path / 'pred' / 'a.nii.gz', ct)
    off = save(tmp_path / 'masks' / 'a.nii.gz', mask[:, :, :-1])
    with pytest.raises(ValueError) as err:
        evaluate.main(['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt'),
                       '--mask', str(tmp_path / 'masks')])
    assert f'a: {off} does not match the ground truth {gt}: shapes differ' in str(err.value), str(err.value)


def test_missing_files_are_named(tmp_path: Path):
    ct, _ = head()
    save(tmp_path / 'pred' / 'lost.nii.gz', ct)
    (tmp_path / 'gt').mkdir()
    with pytest.raises(FileNotFoundError, match='no ground truth for subject lost under --gt'):
        evaluate.main(['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt')])
    with pytest.raises(FileNotFoundError, match='no file matches --pred_pattern "{subject}_sct.nii.gz"'):
        evaluate.main(['--pred', str(tmp_path / 'pred'), '--pred_pattern', '{subject}_sct.nii.gz',
                       '--gt', str(tmp_path / 'gt')])
    with pytest.raises(ValueError, match='must contain {subject}'):
        evaluate.main(['--pred', str(tmp_path / 'pred'), '--pred_pattern', 'x.nii.gz', '--gt', str(tmp_path / 'gt')])


def comparison_folder(results: Path, subjects: list[str], data: Path) -> Path:
    """A comparison TAG 'ext' with no trained run yet (what scripts/compare.py records), for --append."""
    folder = results / 'compare_ext'
    write_json(str(folder / 'shared_options.json'), {
        'tag': 'ext', 'mode': 'models', 'shared': {'n_epochs': 40}, 'runs': [], 'external': [],
        'report': {'reference': 'mrnet', 'slices': []},
        'data': {'dataroot': str(data), 'source': 'mr', 'target': 'ct', 'ct_window': [-1024, 3000],
                 'mr_percentiles': [0.5, 99.5], 'planes': 'xyz', 'test_subjects': subjects, 'train_subjects': []}})
    return folder


def test_append_adds_a_row_and_checks_the_subjects(tmp_path: Path):
    ct, mask = head()
    for s in ('a', 'b'):
        save(tmp_path / 'data' / s / 'ct.nii.gz', ct)
        save(tmp_path / 'data' / s / 'mask.nii.gz', mask.astype(np.uint8))
        save(tmp_path / 'pred' / f'{s}.nii.gz', np.where(mask, ct - 50.0, ct))
    argv = ['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'data'),
            '--results_dir', str(tmp_path / 'results'), '--append', 'ext', '--label', 'Method X']
    with pytest.raises(FileNotFoundError, match='no comparison at .*compare_ext'):
        evaluate.main(argv)
    folder = comparison_folder(tmp_path / 'results', ['a', 'b', 'c'], tmp_path / 'data')
    with pytest.raises(ValueError, match=r"missing \['c'\], extra \[\]"):
        evaluate.main(argv)
    comparison_folder(tmp_path / 'results', ['a', 'b'], tmp_path / 'data')
    evaluate.main(argv)
    with open(folder / 'table.csv', newline='') as f:
        table = list(csv.DictReader(f))
    assert [(r['model'], r['kind'], float(r['volume_mae_fused_mean'])) for r in table] == \
        [('Method X', 'outside', 50.0)]
    assert '| Method X |' in (folder / 'table.md').read_text()
    assert (folder / 'external' / 'Method_X.csv').is_file() and (folder / 'index.html').is_file()
    evaluate.main(argv)                                                   # appending again replaces the row
    with open(folder / 'table.csv', newline='') as f:
        assert len(list(csv.DictReader(f))) == 1


def test_synthrad2025_layout_metrics_and_split_all(tmp_path: Path):
    """MHA predictions against a SynthRAD2025 folder (<subject>/ct.mha, mask.mha): --metrics synthrad2025 gives
    mae, psnr (data range 3000 + 1024) and ms_ssim; --split all refuses a subject without a prediction."""
    from util.image_io import reference_image
    from inference.export.volume_file import write_image
    ct, mask = head()
    ref = reference_image(ct, AFFINE)
    for subject in ('1PA001', '1PA002'):
        write_image(ct, ref, str(tmp_path / 'gt' / subject / 'ct.mha'))
        write_image(mask.astype(np.float32), ref, str(tmp_path / 'gt' / subject / 'mask.mha'))
    write_image(np.where(mask, ct + 100, ct), ref, str(tmp_path / 'pred' / '1PA001_sct.mha'))
    args = ['--pred', str(tmp_path / 'pred'), '--pred_pattern', '{subject}_sct.mha', '--gt', str(tmp_path / 'gt'),
            '--metrics', 'synthrad2025']
    rows = evaluate.main(args)
    assert [r['subject'] for r in rows] == ['1PA001'] and set(rows[0]) >= {'mae', 'psnr', 'ms_ssim'}
    assert rows[0]['mae'] == pytest.approx(100.0)
    assert rows[0]['psnr'] == pytest.approx(20 * math.log10(4024 / 100))
    assert 0 < rows[0]['ms_ssim'] < 1 and 'ssim' not in rows[0]
    with pytest.raises(FileNotFoundError, match=r'--split all: 1 of the 2 subjects of .* have no prediction: 1PA002'):
        evaluate.main(args + ['--split', 'all'])
    write_image(ct, ref, str(tmp_path / 'pred' / '1PA002_sct.mha'))
    rows = evaluate.main(args + ['--split', 'all', '--out', str(tmp_path / 'scores.csv')])
    assert [r['subject'] for r in rows] == ['1PA001', '1PA002'] and rows[1]['ms_ssim'] == pytest.approx(1.0)
    with open(tmp_path / 'scores.csv') as f:
        assert 'ms_ssim' in next(csv.reader(f))
