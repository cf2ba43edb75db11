"""The dose flags shared by scripts/evaluate.py, test.py and scripts/compare.py (docs/dose.md): which plans to make
on each subject's CT and recompute on its synthetic CT, on what grid, with what target and prescription."""
from __future__ import annotations

import argparse
import os

from evaluation.dose.settings import DoseSettings
from util.json_file import read_json

DOSE_FLAGS = ('--dose', '--dose_grid', '--dose_target_radius', '--dose_prescription', '--dose_fractions',
              '--dose_cache')


def add_dose_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The dose flags; ``--dose`` empty (the default) is off. A value left out is evaluation/dose/settings.py's
    DoseSettings default, which the help names (that module is plain data: pyRadPlan is imported only to plan)."""
    parser.add_argument('--dose', default='', metavar='photon,proton',
                        help='also score dose: plan each subject on its CT and recompute the plan on the synthetic '
                             'CT, for these modalities (comma-separated: photon, proton); columns dose_mae_*, '
                             'dose_dvh_*, dose_gamma_* (docs/dose.md). Needs pyRadPlan and pymedphys')
    parser.add_argument('--dose_grid', type=float, default=None, metavar='MM',
                        help=f'voxel size of the dose grid in mm (default {DoseSettings.grid_mm:g})')
    parser.add_argument('--dose_target_radius', type=float, default=None, metavar='MM',
                        help='radius of the automatic spherical target, for a subject without a target mask '
                             f'(default {DoseSettings.target_radius_mm:g})')
    parser.add_argument('--dose_prescription', type=float, default=None, metavar='GY',
                        help=f'prescribed dose to the target in Gy, all fractions together '
                             f'(default {DoseSettings.prescription_gy:g})')
    parser.add_argument('--dose_fractions', type=int, default=None, metavar='N',
                        help=f'number of fractions of the prescription (default {DoseSettings.fractions}; recorded)')
    parser.add_argument('--dose_cache', default='', metavar='DIR',
                        help='where the plans and CT doses are kept, keyed by the CT file and the plan settings '
                             '(default: <data folder>/.cache/dose, beside the SAM cache)')
    return parser


def dose_settings(opt: argparse.Namespace):
    """The DoseSettings of the dose flags, or None without ``--dose``."""
    if not getattr(opt, 'dose', ''):
        return None
    from evaluation.dose.settings import DoseSettings
    given = {'grid_mm': opt.dose_grid, 'target_radius_mm': opt.dose_target_radius,
             'prescription_gy': opt.dose_prescription, 'fractions': opt.dose_fractions}
    return DoseSettings(modalities=DoseSettings.parse_modalities(opt.dose),
                        **{k: v for k, v in given.items() if v is not None})


def make_dose_scorer(opt: argparse.Namespace, target_kind: str, data_dir: str):
    """The DoseScorer of the dose flags (None without ``--dose``), made before anything is scored; its cache
    ``--dose_cache`` or ``<data_dir>/.cache/dose``. ValueError when the ground truth is not a CT (nothing to plan
    on); DoseEngineMissing / RuntimeError, saying how to install it, when pyRadPlan or pymedphys is missing."""
    settings = dose_settings(opt)
    if settings is None:
        return None
    if target_kind != 'ct':
        raise ValueError(f'--dose {opt.dose}: a plan needs the real CT, and the ground truth here is not a CT '
                         f'(an MR-only subject has no CT to plan on)')
    from evaluation.dose.subject_dose import DoseScorer
    return DoseScorer(settings, opt.dose_cache or os.path.join(data_dir, '.cache', 'dose'))


def dose_record_path(scores_csv: str) -> str:
    """``<scores>_dose.json`` beside ``<scores>.csv``: the dose settings and notes of its dose columns."""
    return os.path.splitext(scores_csv)[0] + '_dose.json'


def dataset_dose_scorer(opt: argparse.Namespace, dataset):
    """test.py's DoseScorer for ``dataset`` (None without ``--dose``): ValueError unless it is a volume dataset
    whose target is the CT."""
    if not getattr(opt, 'dose', ''):
        return None
    if not getattr(dataset, 'volumetric', False):
        raise ValueError(f'--dose {opt.dose}: dose is computed on whole volumes; use --dataset_mode '
                         f'triplanar_aligned (got {opt.dataset_mode})')
    from util.intensity import modality_kind
    return make_dose_scorer(opt, modality_kind(dataset.target), dataset.root)


def dose_tokens(opt: argparse.Namespace) -> list[str]:
    """The dose flags ``opt`` was given (``--dose`` set), as tokens for test.py (scripts/compare.py's rows)."""
    if not getattr(opt, 'dose', ''):
        return []
    values = {'--dose': opt.dose, '--dose_grid': opt.dose_grid, '--dose_target_radius': opt.dose_target_radius,
              '--dose_prescription': opt.dose_prescription, '--dose_fractions': opt.dose_fractions,
              '--dose_cache': opt.dose_cache}
    return [t for flag, value in values.items() if value not in (None, '') for t in (flag, str(value))]


def dose_outdated(opt: argparse.Namespace, test_dir: str) -> bool:
    """Whether a test result folder lacks the dose columns ``opt`` asks for: no ``dose.json`` there, or one made
    with other settings (scripts/compare.py then tests the row again)."""
    settings = dose_settings(opt)
    if settings is None:
        return False
    from evaluation.dose.columns import DOSE_RECORD
    from evaluation.dose.subject_dose import settings_record
    path = os.path.join(test_dir, DOSE_RECORD)
    return not os.path.isfile(path) or read_json(path).get('settings') != settings_record(settings)
