"""What a dose evaluation is planned with: prescription, dose grid, automatic target, beams and the engine's knobs,
all recorded next to the scores (:meth:`DoseSettings.record`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from evaluation.dose.errors import DoseError

MODALITIES = ('photon', 'proton')
ENGINES = {'photon': 'SVDPB', 'proton': 'HongPB'}      # pyRadPlan's pencil-beam engines: matRad's, as the challenges


def equispaced(n: int, start: float = 0.0) -> tuple[float, ...]:
    """``n`` gantry angles (degrees) equally spaced over the full circle from ``start``."""
    return tuple(round(start + 360.0 * i / n, 2) for i in range(n))


@dataclass(frozen=True)
class DoseSettings:
    """One dose evaluation's plan settings. Doses are the whole course's, in Gy: the target objective asks for
    ``prescription_gy`` (pyRadPlan optimises total dose; ``fractions`` is recorded only).

    Photons: coplanar IMRT, 6 MV (pyRadPlan's generic machine), ``photon_gantry_deg`` beams of
    ``photon_bixel_mm`` beamlets, each computed out to ``photon_lateral_cutoff_mm`` from its axis (pyRadPlan's
    default 50 mm; beyond 30 mm a 5 mm beamlet gives under 1 % of its central dose). Protons: IMPT with
    ``proton_gantry_deg`` fields, spots ``proton_spot_mm`` apart laterally (energy layers 3 mm, the generic
    machine's default). Fluence optimisation stops after ``max_iter`` L-BFGS-B iterations (scipy)."""
    modalities: tuple[str, ...] = MODALITIES
    grid_mm: float = 3.0
    prescription_gy: float = 60.0
    fractions: int = 30
    target_radius_mm: float = 20.0
    photon_gantry_deg: tuple[float, ...] = equispaced(5)
    proton_gantry_deg: tuple[float, ...] = (90.0, 270.0)
    photon_bixel_mm: float = 5.0
    proton_spot_mm: float = 5.0
    photon_lateral_cutoff_mm: float = 30.0
    max_iter: int = 300

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise DoseError(f'dose modalities must be some of {",".join(MODALITIES)}, got {",".join(self.modalities)}')
        for name in ('grid_mm', 'prescription_gy', 'target_radius_mm', 'photon_bixel_mm', 'proton_spot_mm',
                     'photon_lateral_cutoff_mm'):
            if not getattr(self, name) > 0:
                raise DoseError(f'dose setting {name} must be positive, got {getattr(self, name)}')
        if self.fractions < 1 or self.max_iter < 1:
            raise DoseError(f'dose fractions and max_iter must be at least 1, got {self.fractions}, {self.max_iter}')
        if not self.photon_gantry_deg or not self.proton_gantry_deg:
            raise DoseError('dose plans need at least one beam per modality')

    @staticmethod
    def parse_modalities(text: str) -> tuple[str, ...]:
        """'photon,proton' -> ('photon', 'proton'); DoseError for anything else."""
        names = tuple(dict.fromkeys(t.strip() for t in text.split(',') if t.strip()))
        bad = [m for m in names if m not in MODALITIES]
        if bad or not names:
            raise DoseError(f'--dose takes some of {",".join(MODALITIES)} (comma-separated), got {text!r}')
        return names

    def record(self) -> dict:
        """Every setting as a JSON-able dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def plan_record(self, modality: str) -> dict:
        """What one modality's plan depends on (a part of its cache key, recorded with it)."""
        common = {'modality': modality, 'engine': ENGINES[modality], 'grid_mm': self.grid_mm,
                  'prescription_gy': self.prescription_gy, 'fractions': self.fractions, 'max_iter': self.max_iter}
        if modality == 'photon':
            return {**common, 'gantry_deg': list(self.photon_gantry_deg), 'bixel_mm': self.photon_bixel_mm,
                    'lateral_cutoff_mm': self.photon_lateral_cutoff_mm}
        return {**common, 'gantry_deg': list(self.proton_gantry_deg), 'spot_mm': self.proton_spot_mm}
