"""The names of the dose evaluation's results (light: no engine, no plotting): the columns of scores.csv /
metrics.csv and the comparison tables, ``dose_<metric>_<modality>`` for the metrics mae (fraction of the
prescription), dvh (the DVH metric) and gamma (pass rate, %) and the modalities photon and proton; and the files
written beside a synthetic CT."""
from __future__ import annotations

import os

from util.image_io import image_stem

MODALITIES = ('photon', 'proton')
METRICS = ('mae', 'dvh', 'gamma')
TITLES = {'mae': 'dose MAE', 'dvh': 'DVH metric', 'gamma': 'gamma 2 %/2 mm (%)'}
HIGHER_IS_BETTER = {'mae': False, 'dvh': False, 'gamma': True}
DOSE_RECORD = 'dose.json'     # beside a test's metrics.csv: the settings and notes of its dose columns
DECIMALS = {'mae': 4, 'dvh': 4, 'gamma': 2}
NOTE = ('dose MAE: mean |dose on sCT - dose on CT| over the voxels with at least 90 % of the prescription, as a '
        'fraction of the prescription; DVH metric: |dD98|/D98 + |dV95|/V95 of the target + mean relative D2 and '
        'Dmean differences of the three most exposed organs at risk; gamma: pass rate (%), 2 % global / 2 mm, '
        '10 % low-dose cutoff (SynthRAD2025)')


def column(metric: str, modality: str) -> str:
    """'dose_mae_photon' ..."""
    return f'dose_{metric}_{modality}'


def dose_columns(modalities: tuple[str, ...] = MODALITIES) -> list[str]:
    """The columns of ``modalities``, photon's three first."""
    return [column(m, mod) for mod in modalities for m in METRICS]


def split_column(name: str) -> tuple[str, str] | None:
    """(metric, modality) of a dose column, None for any other name."""
    parts = name.split('_')
    if len(parts) == 3 and parts[0] == 'dose' and parts[1] in METRICS and parts[2] in MODALITIES:
        return parts[1], parts[2]
    return None


def dose_file(sct_path: str, name: str, ext: str = '.nii.gz') -> str:
    """``<dir of the sCT>/<its stem>_dose_<name><ext>``."""
    return os.path.join(os.path.dirname(os.path.abspath(sct_path)), f'{image_stem(sct_path)}_dose_{name}{ext}')


def figure_files(sct_path: str, modalities: tuple[str, ...]) -> list[str]:
    """The PNGs drawn beside ``sct_path``: the DVH, then one slice figure per modality."""
    return [dose_file(sct_path, 'dvh', '.png')] + [dose_file(sct_path, m, '.png') for m in modalities]
