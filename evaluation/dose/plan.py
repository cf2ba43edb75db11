"""A plan optimised on the real CT, and the same plan recomputed on a synthetic CT.

:func:`plan_on_ct` builds the CT on the dose grid, the beams, every beamlet's dose (the dose influence matrix) and
the beamlet weights that best give the target its prescription (sparing organs at risk and the body), then the CT
dose: cached per CT and settings (evaluation/dose/plan_cache.py). :func:`recompute` computes the same beams with the
same weights on the synthetic CT: a new dose influence on the sCT times the stored weights. Both doses go through
the same forward calculation, so a synthetic CT equal to the CT gives exactly the CT dose."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from evaluation.dose.errors import INSTALL_HINT, DoseEngineMissing, DoseError
from evaluation.dose.grid import DoseGrid
from evaluation.dose.plan_cache import load_plan, plan_key, store_plan
from evaluation.dose.settings import DoseSettings
from evaluation.dose.structures import Structures
from util.geometry import Geometry
from util.image_io import read_image

GRID_TOL_MM = 1e-3


@dataclass
class CtPlan:
    """One modality's plan on a CT. Dose-grid arrays are (X, Y, Z) in the CT file's axis order; ``dose_affine``
    is that grid's RAS voxel -> mm affine, ``spacing_mm`` its voxel size. ``dose_ct``: Gy over the whole course,
    float32; masks bool; ``record``: the plan settings, structures, beamlets, cache key and whether it was a hit."""
    modality: str
    ct_path: str
    dose_ct: np.ndarray
    dose_affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    target: np.ndarray
    oars: dict[str, np.ndarray]
    body: np.ndarray
    prescription_gy: float
    record: dict
    settings: DoseSettings
    grid: DoseGrid
    ct_geometry: Geometry
    stf: dict = field(repr=False)
    weights: np.ndarray = field(repr=False)


def engine_version() -> str:
    """pyRadPlan's installed version (without importing it); DoseEngineMissing when it is not installed."""
    try:
        return version('pyradplan')
    except PackageNotFoundError:
        raise DoseEngineMissing(f'the dose evaluation needs pyRadPlan, which is not installed: {INSTALL_HINT}') \
            from None


def require_ct(ct_path: str | None, subject: str) -> str:
    """``ct_path``, or DoseError when the subject has no CT (an MR-only subject: nothing to plan on)."""
    if not ct_path or not os.path.exists(ct_path):
        raise DoseError(f'{subject}: no CT to plan on ({ct_path or "no ct file in its folder"}); the dose '
                        f'evaluation needs the real CT of every subject')
    return ct_path


def plan_on_ct(ct_path: str, structures: Structures, modality: str, settings: DoseSettings,
               cache_dir: str | None) -> CtPlan:
    """The plan of ``modality`` optimised on the CT ``ct_path`` (HU) for ``structures`` (on its grid), and its
    dose, both on the ``settings.grid_mm`` dose grid; read from ``cache_dir`` when planned before with the same
    CT content, masks and settings (None: no cache)."""
    from evaluation.dose.engine import Problem
    hu, img = read_image(require_ct(ct_path, ct_path))
    grid = DoseGrid.of(img.affine, hu.shape, settings.grid_mm)
    target = grid.sample_mask(structures.target)
    if not target.any():
        raise DoseError(f'{structures.target_source if structures.target_source != "automatic" else ct_path}: the '
                        f'target is smaller than one {settings.grid_mm:g} mm dose voxel')
    body = grid.sample_mask(structures.body) | target
    oars = {name: grid.sample_mask(mask) for name, mask in structures.oars.items()}
    plan_record = settings.plan_record(modality)
    key = plan_key(ct_path, structures.digest(), plan_record, engine_version())
    cached = load_plan(cache_dir, key) if cache_dir else None
    hu_grid = grid.sample(hu)
    if cached is not None:
        stf, weights, dose_ct, record = cached
        record = {**record, 'cache': 'hit'}
    else:
        start = time.perf_counter()
        stf, weights = Problem(hu_grid, grid.affine, body, target, oars, modality, settings).optimise()
        optimised = time.perf_counter()
        dose_ct = Problem(hu_grid, grid.affine, body, target, oars, modality, settings).dose(stf, weights)
        record = {**plan_record, 'structures': structures.record(), 'beamlets': int(len(weights)),
                  'dose_grid_shape': list(grid.shape), 'engine_version': engine_version(), 'cache_key': key,
                  'optimise_s': round(optimised - start, 2), 'dose_s': round(time.perf_counter() - optimised, 2)}
        if cache_dir:
            store_plan(cache_dir, key, stf, weights, dose_ct, record)
        record = {**record, 'cache': 'miss'}
    return CtPlan(modality=modality, ct_path=ct_path, dose_ct=dose_ct, dose_affine=grid.affine,
                  spacing_mm=grid.spacing_mm, target=target, oars=oars, body=body,
                  prescription_gy=settings.prescription_gy, record=record, settings=settings, grid=grid,
                  ct_geometry=Geometry.of(img), stf=stf, weights=weights)


def recompute_hu(plan: CtPlan, sct_hu: np.ndarray) -> np.ndarray:
    """The dose (Gy, float32, ``plan.dose_ct``'s grid) of ``plan``'s beams and weights on a synthetic CT given as
    HU on the CT's voxel grid (the CT file's voxel order)."""
    from evaluation.dose.engine import Problem
    if tuple(np.shape(sct_hu)[:3]) != plan.grid.ct_shape:
        raise DoseError(f'the synthetic CT has shape {np.shape(sct_hu)}, the CT {plan.ct_path} {plan.grid.ct_shape}')
    problem = Problem(plan.grid.sample(sct_hu), plan.grid.affine, plan.body, plan.target, plan.oars, plan.modality,
                      plan.settings)
    return problem.dose(plan.stf, plan.weights)


def recompute(plan: CtPlan, sct_path: str) -> np.ndarray:
    """:func:`recompute_hu` of the synthetic CT file ``sct_path``; DoseError naming both files when it is not on
    the CT's voxel grid (shape, affine within 1e-3 mm)."""
    sct, img = read_image(sct_path)
    why = plan.ct_geometry.mismatch(Geometry.of(img), GRID_TOL_MM)
    if why:
        raise DoseError(f'{sct_path} is not on the voxel grid of the CT {plan.ct_path}: {" ".join(why.split())}')
    return recompute_hu(plan, sct)
