"""One subject's dose evaluation: for each modality, the plan optimised on the real CT (cached, by the engine),
the same plan recomputed on the synthetic CT, and SynthRAD2025's dose metrics as the columns ``dose_mae_<modality>``
(fraction of the prescription), ``dose_dvh_<modality>`` and ``dose_gamma_<modality>`` (pass rate, %).

Beside the synthetic CT ``<dir>/<stem>.<ext>`` it writes, per modality, the dose volumes on the dose grid (NIfTI,
float32, Gy, with the dose grid's affine) ``<stem>_dose_<modality>_{ct,sct,diff,gamma}.nii.gz`` (diff = sCT - CT;
gamma -1 where not evaluated, below 10 % of the maximum) and the pictures ``<stem>_dose_dvh.png`` and
``<stem>_dose_<modality>.png`` (evaluation/dose/figures.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace

import nibabel as nib
import numpy as np

from evaluation.dose import figures
from evaluation.dose.columns import METRICS, TITLES, column, dose_columns, dose_file
from evaluation.dose.errors import DoseError
from evaluation.dose.gamma import RECORD as GAMMA_RECORD, gamma_map, pass_rate, require_pymedphys
from evaluation.dose.metrics import dose_mae, dvh_metric
from inference.export.volume_file import write_image
from util.geometry import Geometry
from util.image_io import image_stem, read_image

VOLUMES = ('ct', 'sct', 'diff', 'gamma')
NOT_EVALUATED = -1.0        # the gamma volume's value where the gamma was not evaluated


@dataclass
class SubjectDose:
    """What :func:`score_dose` found: ``scores`` {column: value}, ``notes`` (terms left out, the target used) and
    ``record`` (the target and each modality's plan record)."""
    scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)


def canonical(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``volume`` (voxel order of ``affine``) in RAS order, and its voxel sizes in that order (mm)."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(volume, np.float32), affine))
    return np.asarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])


def write_volume(volume: np.ndarray, affine: np.ndarray, path: str) -> None:
    """``volume`` as float32 NIfTI with ``affine``, atomically."""
    write_image(np.asarray(volume, np.float32), nib.Nifti1Image(np.zeros(volume.shape, np.float32), affine), path)


def score_dose(subject: str, ct_path: str, sct_path: str, subject_dir: str | None, settings, cache_dir: str | None,
               engine, affine_tol: float = 1e-3) -> SubjectDose:
    """Plan on ``ct_path`` (HU) and recompute on ``sct_path`` (HU, the CT's voxel grid, else DoseError naming both
    files, before anything is planned) for each of ``settings.modalities``; ``subject_dir``: the subject's folder
    (its target and oar_* masks; without a target the automatic one, written as ``<stem>_dose_target.nii.gz``).
    ``engine``: the planning functions (evaluation/dose/plan.py's ``plan_on_ct``, ``recompute_hu`` and
    structures.py's ``subject_structures``)."""
    ct, ct_img = read_image(ct_path)
    sct, sct_img = read_image(sct_path)
    why = Geometry.of(ct_img).mismatch(Geometry.of(sct_img), affine_tol)
    if why:
        raise DoseError(f'{sct_path} is not on the voxel grid of the CT {ct_path}: {" ".join(why.split())}')
    structures = engine.subject_structures(subject_dir, subject, ct_path, ct, ct_img, settings)
    out = SubjectDose(record={'structures': structures.record()})
    if structures.target_source == 'automatic':
        path = dose_file(sct_path, 'target')
        write_volume(structures.target, ct_img.affine, path)
        out.notes.append(f'no target file: an automatic spherical target of {settings.target_radius_mm:g} mm '
                         f'radius, written to {path}')
    if not structures.oars:
        out.notes.append('no oar_* masks: the DVH metric leaves out its organ-at-risk terms (D2, Dmean)')
    panels = []
    for modality in settings.modalities:
        plan = engine.plan_on_ct(ct_path, structures, modality, settings, cache_dir)
        out.record[modality] = plan.record
        dose_ct = np.asarray(plan.dose_ct, np.float64)
        dose_sct = np.asarray(engine.recompute_hu(plan, sct), np.float64)
        gamma = gamma_map(dose_ct, dose_sct, plan.spacing_mm)
        dvh = dvh_metric(dose_ct, dose_sct, plan.target, plan.oars, plan.prescription_gy)
        out.scores.update({column('mae', modality): dose_mae(dose_ct, dose_sct, plan.prescription_gy),
                           column('dvh', modality): dvh.value, column('gamma', modality): pass_rate(gamma)})
        if dvh.left_out and structures.oars:
            out.notes.append(f'{modality} DVH metric: {dvh.left_out}')
        volumes = {'ct': dose_ct, 'sct': dose_sct, 'diff': dose_sct - dose_ct,
                   'gamma': np.where(np.isfinite(gamma), gamma, NOT_EVALUATED)}
        for name, volume in volumes.items():
            write_volume(volume, plan.dose_affine, dose_file(sct_path, f'{modality}_{name}'))
        (c_ct, zooms), (c_sct, _), (c_gamma, _), (c_target, _) = (
            canonical(v, plan.dose_affine) for v in (dose_ct, dose_sct, gamma, plan.target))
        structures_ras = {'target': c_target > 0.5,
                          **{n: canonical(m, plan.dose_affine)[0] > 0.5 for n, m in plan.oars.items()}}
        panels.append((modality, c_ct, c_sct, structures_ras))
        scores = ', '.join(f'{TITLES[m]} {out.scores[column(m, modality)]:.4g}' for m in METRICS)
        figures.plot_dose_slices(c_ct, c_sct, c_gamma, c_target > 0.5, zooms,
                                 f'{image_stem(sct_path)}, {modality}: {scores}', dose_file(sct_path, modality, '.png'))
    figures.plot_dvh(panels, f'{image_stem(sct_path)}: DVH', dose_file(sct_path, 'dvh', '.png'))
    return out


def settings_record(settings) -> dict:
    """A DoseSettings' record (plans, grid, target, prescription) with the gamma criteria: what makes the dose
    columns comparable."""
    return json.loads(json.dumps({**settings.record(), **GAMMA_RECORD}))     # as read back from dose.json


def load_engine():
    """evaluation/dose's planning functions, pyRadPlan imported now: DoseEngineMissing (saying how to install it)
    when it cannot be, RuntimeError when pymedphys or numba cannot be."""
    from evaluation.dose import engine, plan, structures
    engine.pyradplan()
    require_pymedphys()
    return SimpleNamespace(subject_structures=structures.subject_structures, plan_on_ct=plan.plan_on_ct,
                           recompute_hu=plan.recompute_hu)


class DoseScorer:
    """:func:`score_dose` for each subject of a run (scripts/evaluate.py, test.py), keeping the notes and plan
    records for ``dose.json``. Made before anything is scored, so that a missing pyRadPlan or pymedphys is refused
    at once."""

    def __init__(self, settings, cache_dir: str | None, engine=None):
        self.settings, self.cache_dir = settings, cache_dir
        self.engine = engine if engine is not None else load_engine()
        self.columns = dose_columns(settings.modalities)
        self.subjects: dict[str, dict] = {}

    def __call__(self, subject: str, sct_path: str, ct_path: str, subject_dir: str | None) -> dict[str, float]:
        """The dose columns of one subject; its notes are printed and kept."""
        result = score_dose(subject, ct_path, sct_path, subject_dir, self.settings, self.cache_dir, self.engine)
        for note in result.notes:
            print(f'{subject}: {note}')
        self.subjects[subject] = {'notes': result.notes, **result.record}
        return result.scores

    def record(self) -> dict:
        """:func:`settings_record` and, per subject, its notes, structures and plan records."""
        return {'settings': settings_record(self.settings), 'subjects': self.subjects}
