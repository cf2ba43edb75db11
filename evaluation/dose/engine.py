"""pyRadPlan, the dose engine (matRad's Python reimplementation: its SVD pencil beam for photons, Hong's pencil
beam for protons, generic machines shipped in its wheel). The only module of the toolkit that imports it, on first
use: a missing install is :class:`DoseEngineMissing`, saying how to install it.

Volumes come and go on the dose grid in the CT file's voxel order with that grid's RAS affine; pyRadPlan gets
them in LPS order (its gantry turns about the patient's z axis, the LPS frame it works in), identity direction.
Runs on the CPU with numpy (``prefer_gpu`` off), so that a dose does not depend on the machine it was computed on.
"""
from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from evaluation.dose.errors import INSTALL_HINT, DoseEngineMissing
from evaluation.dose.settings import DoseSettings

LPS = axcodes2ornt(('L', 'P', 'S'))
TARGET_WEIGHT, OAR_WEIGHT, BODY_WEIGHT = 1000.0, 100.0, 10.0   # objective priorities
OAR_MAX, BODY_MAX = 0.5, 0.8                          # squared overdosing above these fractions of the prescription
_PYRADPLAN = None


def pyradplan():
    """The pyRadPlan package, imported once, progress bars off, numpy on the CPU. Its quantity modules each build
    a pint UnitRegistry (about 0.5 s apiece); during the import they share one. DoseEngineMissing when it, or a
    package its dose path needs, is not installed."""
    global _PYRADPLAN
    if _PYRADPLAN is None:
        try:
            import pint
            shared, registry = pint.UnitRegistry(), pint.UnitRegistry
            pint.UnitRegistry = lambda *args, **kwargs: shared if not args and not kwargs else registry(*args,
                                                                                                         **kwargs)
            try:
                with quiet():
                    import pyRadPlan
                    from pyRadPlan.core._progress import ProgressReporter
            finally:
                pint.UnitRegistry = registry
        except ImportError as e:
            raise DoseEngineMissing(f'the dose evaluation needs pyRadPlan 0.5.0, which cannot be imported ({e}): '
                                    f'{INSTALL_HINT}') from None
        ProgressReporter.console_progress = False
        pyRadPlan.settings.xp.prefer_gpu = False
        pyRadPlan.settings.xp.preferred_cpu_array_backend = 'numpy'
        _PYRADPLAN = pyRadPlan
    return _PYRADPLAN


@contextlib.contextmanager
def quiet():
    """pyRadPlan's calls without the floating-point warnings of its ray tracer (rays parallel to a grid axis
    divide by zero, by design) and the deprecation warnings of its imports (numpydantic, torch)."""
    with warnings.catch_warnings(), np.errstate(divide='ignore', invalid='ignore'):
        warnings.simplefilter('ignore', RuntimeWarning)
        warnings.simplefilter('ignore', FutureWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        yield


def check_engine() -> str:
    """pyRadPlan's version, once it is imported (what every plan needs, a few seconds once per process):
    DoseEngineMissing, saying how to install it, before anything is planned or scored."""
    return pyradplan().__version__


def _to_lps(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return apply_orientation(volume, ornt_transform(io_orientation(affine), LPS))


def _from_lps(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(apply_orientation(volume, ornt_transform(LPS, io_orientation(affine))))


def _image(volume: np.ndarray, affine: np.ndarray, dtype):
    """A SimpleITK image of a dose-grid volume, LPS order, spacing from ``affine``, origin 0, identity direction."""
    import SimpleITK as sitk
    lps = np.ascontiguousarray(_to_lps(np.asarray(volume, dtype), affine))
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    order = ornt_transform(io_orientation(affine), LPS)
    for src, (dst, _) in enumerate(order):
        spacing[int(dst)] = float(sizes[src])
    img = sitk.GetImageFromArray(np.transpose(lps, (2, 1, 0)))
    img.SetSpacing(spacing)
    return img


class Problem:
    """pyRadPlan's CT (HU on the dose grid), structure set (body, target, organs at risk, with their objectives)
    and plan for one modality; the dose grid is the CT's grid."""

    def __init__(self, hu: np.ndarray, affine: np.ndarray, body: np.ndarray, target: np.ndarray,
                 oars: dict[str, np.ndarray], modality: str, settings: DoseSettings):
        prp = pyradplan()
        from pyRadPlan.ct import CT
        from pyRadPlan.cst import VOI, StructureSet
        from pyRadPlan.optimization.objectives import SquaredDeviation, SquaredOverdosing
        self.affine = affine
        self.ct = CT(cube_hu=_image(hu, affine, np.float64))
        rx = settings.prescription_gy

        def voi(name, kind, mask, objectives):
            return VOI(name=name, voi_type=kind, mask=_image(mask, affine, np.uint8), ct_image=self.ct,
                       objectives=objectives)
        vois = [voi('body', 'EXTERNAL', body, [SquaredOverdosing(priority=BODY_WEIGHT, d_max=BODY_MAX * rx)]),
                voi('target', 'TARGET', target, [SquaredDeviation(priority=TARGET_WEIGHT, d_ref=rx)])]
        vois += [voi(name, 'OAR', mask, [SquaredOverdosing(priority=OAR_WEIGHT, d_max=OAR_MAX * rx)])
                 for name, mask in sorted(oars.items()) if mask.any()]
        self.cst = StructureSet(vois=vois, ct_image=self.ct)
        if modality == 'photon':
            self.pln = prp.PhotonPlan(machine='Generic')
            angles, width = settings.photon_gantry_deg, settings.photon_bixel_mm
            engine = {'engine': 'SVDPB', 'geometric_lateral_cutoff': settings.photon_lateral_cutoff_mm}
        else:
            self.pln = prp.IonPlan(radiation_mode='protons', machine='Generic')
            angles, width = settings.proton_gantry_deg, settings.proton_spot_mm
            engine = {'engine': 'HongPB', 'calc_let': False}
        self.pln.prescribed_dose = rx
        self.pln.num_of_fractions = settings.fractions
        self.pln.prop_stf = {'gantry_angles': [float(a) for a in angles], 'couch_angles': [0.0] * len(angles),
                             'bixel_width': float(width)}
        self.pln.prop_dose_calc = {**engine, 'dose_grid': self.ct.grid}
        self.pln.prop_opt = {'solver': 'scipy', 'max_iter': settings.max_iter}

    def optimise(self) -> tuple[dict, np.ndarray]:
        """(the beams' steering information as a JSON-able dict, the optimised beamlet weights): the dose influence
        matrix of every beamlet on this CT, then fluence optimisation against the objectives."""
        prp = pyradplan()
        with quiet():
            stf = prp.generate_stf(self.ct, self.cst, self.pln)
            dij = prp.calc_dose_influence(self.ct, self.cst, stf, self.pln)
            weights = prp.fluence_optimization(self.ct, self.cst, stf, dij, self.pln)
        return json.loads(json.dumps(stf.model_dump(), default=_plain)), np.asarray(weights, np.float64)

    def dose(self, stf: dict, weights: np.ndarray) -> np.ndarray:
        """The dose (Gy, float32, dose grid in the CT file's voxel order) of beams ``stf`` with beamlet ``weights``
        on this CT: pyRadPlan's forward dose calculation (every beamlet computed and summed with its weight)."""
        import SimpleITK as sitk
        prp = pyradplan()
        with quiet():
            result = prp.calc_dose_forward(self.ct, self.cst, prp.validate_stf(stf), self.pln,
                                           np.asarray(weights, np.float64))
        lps = np.transpose(sitk.GetArrayFromImage(result['physical_dose']), (2, 1, 0))
        return _from_lps(lps, self.affine).astype(np.float32)


def _plain(value):
    """JSON for what pydantic's model_dump leaves as numpy (arrays, scalars)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f'cannot write {type(value).__name__} as JSON')
