"""scripts/evaluate.py --dose: the dose columns in scores.csv with values worked out by hand (a deterministic fake
engine stands in for pyRadPlan here; the engine has tests of its own), the dose volumes and pictures
beside the synthetic CT on the dose grid's affine, the settings beside the scores, and bad input as one line with
exit status 2 before anything is written."""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from evaluation.dose import engine, subject_dose
from evaluation.dose.errors import DoseError
from scripts import evaluate
from util.cli import run_cli

SHAPE = (12, 12, 10)
AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
TARGET = (slice(4, 8), slice(4, 8), slice(3, 7))
DOSE_AFFINE = AFFINE + np.array([[0, 0, 0, 1.0], [0, 0, 0, 1.0], [0, 0, 0, 1.0], [0, 0, 0, 0]])


def save(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), AFFINE), str(path))
    return path


class FakeEngine:
    """A deterministic stand-in for evaluation/dose's planning: the dose grid is the CT's voxels with an origin
    1 mm off (DOSE_AFFINE, so that a volume written on the wrong affine shows); the CT dose is the
    prescription inside the target box and 0 elsewhere; the sCT dose is the CT dose times 1 - 0.0003 x the mean
    HU difference inside the body (+100 HU: 0.97)."""

    def __init__(self, fail: str = ''):
        self.fail = fail

    def subject_structures(self, subject_dir, subject, ct_path, ct_hu, ct_img, settings):
        if self.fail:
            raise DoseError(f'{subject}: {self.fail}')
        target = np.zeros(ct_hu.shape, bool)
        target[TARGET] = True
        return SimpleNamespace(body=ct_hu > -500, target=target, target_source='automatic', oars={},
                               record=lambda: {'target': 'automatic'})

    def plan_on_ct(self, ct_path, structures, modality, settings, cache_dir):
        img = nib.load(ct_path)
        dose = np.where(structures.target, settings.prescription_gy, 0.0).astype(np.float32)
        return SimpleNamespace(modality=modality, dose_ct=dose, dose_affine=DOSE_AFFINE,
                               spacing_mm=tuple(float(z) for z in img.header.get_zooms()[:3]),
                               target=structures.target, oars={}, body=structures.body,
                               prescription_gy=settings.prescription_gy, record={'fake': modality},
                               ct=np.asarray(img.dataobj, np.float32))

    def recompute_hu(self, plan, sct_hu):
        body = plan.body
        return plan.dose_ct * (1 - 0.0003 * float(np.mean(sct_hu[body] - plan.ct[body])))


def subjects(tmp_path: Path, names: tuple[str, ...] = ('same', 'plus100')) -> tuple[Path, Path]:
    """gt/<s>/ct.nii.gz and pred/<s>.nii.gz for s in ``names``: 'same' a perfect sCT, 'plus100' one 100 HU too
    high inside the body."""
    ct = np.full(SHAPE, -1000.0, np.float32)
    ct[2:10, 2:10, 1:9] = 40.0
    body = ct > -500
    for name, pred in (('same', ct), ('plus100', np.where(body, ct + 100, ct))):
        if name not in names:
            continue
        save(tmp_path / 'gt' / name / 'ct.nii.gz', ct)
        save(tmp_path / 'pred' / f'{name}.nii.gz', pred)
    return tmp_path / 'pred', tmp_path / 'gt'


def test_dose_columns_volumes_and_pictures_by_hand(tmp_path: Path, monkeypatch):
    pytest.importorskip('pymedphys')
    monkeypatch.setattr(subject_dose, 'load_engine', lambda: FakeEngine())
    pred, gt = subjects(tmp_path, ('plus100',))     # a perfect sCT: the engine's tests
    out = tmp_path / 'scores.csv'
    evaluate.main(['--pred', str(pred), '--gt', str(gt), '--dose', 'photon,proton', '--dose_prescription', '60',
                   '--out', str(out)])
    with open(out, newline='') as f:
        rows = {r['subject']: r for r in csv.DictReader(f)}
    for modality in ('photon', 'proton'):
        off = rows['plus100']
        # +100 HU: 0.97 x 60 Gy = 58.2 Gy in the target; MAE 1.8 / 60 = 0.03; D98 60 -> 58.2: 0.03, V95 (57 Gy)
        # 100 % both: 0, no OAR terms; gamma: a 3 % difference on a flat 60 Gy plateau fails everywhere (1.5)
        assert float(off[f'dose_mae_{modality}']) == pytest.approx(0.03, abs=1e-6)
        assert float(off[f'dose_dvh_{modality}']) == pytest.approx(0.03, abs=1e-6)
        assert float(off[f'dose_gamma_{modality}']) == 0
    assert float(rows['plus100']['mae']) == pytest.approx(100.0)      # the image metrics stay beside them
    # the dose volumes beside the synthetic CT, on the dose grid's affine
    sct_dose = nib.load(str(pred / 'plus100_dose_proton_sct.nii.gz'))
    assert np.allclose(sct_dose.affine, DOSE_AFFINE)
    assert np.allclose(nib.load(str(pred / 'plus100_dose_target.nii.gz')).affine, AFFINE)    # the CT's grid
    assert np.asarray(sct_dose.dataobj)[TARGET] == pytest.approx(58.2, abs=1e-4)
    diff = np.asarray(nib.load(str(pred / 'plus100_dose_photon_diff.nii.gz')).dataobj)
    assert diff[TARGET] == pytest.approx(-1.8, abs=1e-4) and diff.sum() == pytest.approx(-1.8 * 64, abs=1e-3)
    gamma = np.asarray(nib.load(str(pred / 'plus100_dose_photon_gamma.nii.gz')).dataobj)
    assert (gamma[TARGET] > 1).all() and (gamma[0] == -1).all()           # -1: below the 10 % cutoff
    for name in ('dvh', 'photon', 'proton', 'target'):
        assert (pred / f'plus100_dose_{name}{".nii.gz" if name == "target" else ".png"}').is_file()
    record = json.loads((tmp_path / 'scores_dose.json').read_text())
    assert record['settings']['prescription_gy'] == 60
    assert record['settings']['gamma'].startswith('2 % global (of the CT dose maximum) / 2 mm')
    assert any('organ-at-risk terms' in n for n in record['subjects']['plus100']['notes'])


def test_an_mr_ground_truth_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch, capsys):
    pred, gt = subjects(tmp_path)
    for s in ('same', 'plus100'):
        (gt / s / 'ct.nii.gz').rename(gt / s / 'mr.nii.gz')      # an MR-only subject: no CT to plan on
    out = tmp_path / 'scores.csv'
    line = run_main(['--pred', str(pred), '--gt', str(gt), '--modality', 'mr', '--dose', 'photon', '--out', str(out)],
                    monkeypatch, capsys)
    assert line.startswith('evaluate.py: error: --dose photon: a plan needs the real CT') and not out.exists()


def run_main(argv: list[str], monkeypatch, capsys) -> str:
    """evaluate.main under util.cli.run_cli as the command line runs it: its exit status must be 2; returns the
    error line."""
    monkeypatch.setattr('sys.argv', ['evaluate.py', *argv])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: evaluate.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    return next(line for line in err.splitlines() if line.startswith('evaluate.py: error: '))


def test_pyradplan_missing_says_how_to_install_it(tmp_path: Path, monkeypatch, capsys):
    pred, gt = subjects(tmp_path)
    monkeypatch.setitem(sys.modules, 'pyRadPlan', None)         # as if not installed: importing it fails
    monkeypatch.setattr(engine, '_PYRADPLAN', None)
    line = run_main(['--pred', str(pred), '--gt', str(gt), '--dose', 'proton', '--out', str(tmp_path / 's.csv')],
                    monkeypatch, capsys)
    assert 'needs pyRadPlan' in line and 'scripts/setup.sh' in line
    assert not (tmp_path / 's.csv').exists() and not list(pred.glob('*_dose_*'))


def test_an_empty_target_is_one_line_naming_the_subject(tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip('pymedphys')
    monkeypatch.setattr(subject_dose, 'load_engine', lambda: FakeEngine('the target is empty'))
    pred, gt = subjects(tmp_path)
    line = run_main(['--pred', str(pred), '--gt', str(gt), '--dose', 'photon'], monkeypatch, capsys)
    assert 'could not be scored' in line and 'plus100: plus100: the target is empty' in line
    assert not list(pred.glob('*_dose_*'))


def test_an_sct_off_the_ct_grid_names_both_files_before_anything_is_planned(tmp_path: Path):
    pred, gt = subjects(tmp_path, ('plus100',))
    moved = nib.Nifti1Image(np.asarray(nib.load(str(pred / 'plus100.nii.gz')).dataobj), AFFINE + np.eye(4) * 0.5)
    nib.save(moved, str(pred / 'plus100.nii.gz'))
    engine = FakeEngine('must not be reached')
    with pytest.raises(DoseError, match='plus100.nii.gz is not on the voxel grid of the CT .*ct.nii.gz') as info:
        subject_dose.score_dose('plus100', str(gt / 'plus100' / 'ct.nii.gz'), str(pred / 'plus100.nii.gz'), None,
                                SimpleNamespace(modalities=('photon',)), None, engine)
    assert '\n' not in str(info.value) and not list(pred.glob('*_dose_*'))


def test_the_result_page_shows_the_dose_table_notes_and_pictures(tmp_path: Path):
    from evaluation.dose.page import add_dose_section
    from util.html import HTML
    volumes = tmp_path / 'volumes'
    volumes.mkdir()
    for name in ('dvh', 'photon'):
        (volumes / f's1_fake_B_fused_dose_{name}.png').write_bytes(b'png')
    rows = [{'plane': 'fused', 'subject': 's1', 'dose_mae_photon': 0.01, 'dose_dvh_photon': 0.2,
             'dose_gamma_photon': 90.0},
            {'plane': 'fused', 'subject': 's2', 'dose_mae_photon': 0.03, 'dose_dvh_photon': 0.4,
             'dose_gamma_photon': 100.0},
            {'plane': 'x', 'subject': 's1', 'mae': 50.0}]
    scorer = SimpleNamespace(settings=SimpleNamespace(modalities=('photon',)),
                             subjects={'s1': {'notes': ['no oar_* masks']}},
                             record=lambda: {'settings': {'grid_mm': 3.0}})
    page = HTML(str(tmp_path / 'web'), 'test')
    add_dose_section(page, rows, scorer, lambda s: str(volumes / f'{s}_fake_B_fused.nii.gz'))
    html = Path(page.save()).read_text()
    # two fused rows: MAE 0.02 ± 0.01, DVH 0.3 ± 0.1, gamma 95 ± 5 (population std)
    for text in ('0.0200 ± 0.0100', '0.3000 ± 0.1000', '95.00 ± 5.00', 's1: no oar_* masks', 'grid_mm 3.0'):
        assert text in html
    assert re.search(r'>photon</td>\s*<td[^>]*>2</td>', html)       # the fused rows' subjects only
    assert (tmp_path / 'web' / 'images' / 's1_fake_B_fused_dose_dvh.png').read_bytes() == b'png'
    assert 'images/s1_fake_B_fused_dose_photon.png' in html


def test_the_dose_flags_help_names_the_settings_defaults(monkeypatch):
    """The help's defaults are DoseSettings' own (here changed), not copies of them."""
    import argparse
    from evaluation.dose.settings import DoseSettings
    from options import dose_options
    for name, value in (('grid_mm', 2.5), ('target_radius_mm', 17.0), ('prescription_gy', 54.0), ('fractions', 27)):
        monkeypatch.setattr(DoseSettings, name, value)
    text = ' '.join(dose_options.add_dose_arguments(argparse.ArgumentParser()).format_help().split())
    for words in ('dose grid in mm (default 2.5)', 'target mask (default 17)', 'together (default 54)',
                  'prescription (default 27; recorded)'):
        assert words in text, words
