"""The dose engine (evaluation/dose/: pyRadPlan plans on a CT, recomputed on a synthetic CT): exactness, the physics
of a range error, the automatic target, the target and OAR files, the plan cache and bad input. Tiny water boxes on
a 1 mm grid, one beam per modality."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from evaluation.dose import engine, plan as plan_module
from evaluation.dose.errors import DoseEngineMissing, DoseError
from evaluation.dose.grid import DoseGrid
from evaluation.dose.plan import plan_on_ct, recompute, recompute_hu, require_ct
from evaluation.dose.settings import DoseSettings
from evaluation.dose.structures import Structures, automatic_target, subject_structures

SHAPE = (14, 64, 14)                 # a water box, 1 mm voxels, 1 mm of air around it; beams enter at high y
SLAB = (slice(1, -1), slice(48, 54), slice(1, -1))    # 6 mm upstream of the target, which is centred at y = 38
SLAB_HU = 1000.0


def nifti(path, data, affine=None) -> str:
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None else affine), str(path))
    return str(path)


@pytest.fixture(scope='module')
def water(tmp_path_factory):
    """(CT file, its HU, plans {modality: CtPlan}) of a water box with a 4 mm ball target at depth."""
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[1:-1, 1:-1, 1:-1] = 0.0
    body = hu > -500
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    target = (np.linalg.norm(grid - np.array([6.5, 38, 6.5]), axis=-1) <= 4) & body
    ct_path = nifti(tmp_path_factory.mktemp('water') / 'ct.nii.gz', hu)
    settings = DoseSettings(grid_mm=1.0, photon_gantry_deg=(0.0,), proton_gantry_deg=(0.0,), max_iter=50)
    structures = Structures(body=body, target=target, target_source='automatic')
    plans = {m: plan_on_ct(ct_path, structures, m, settings, None) for m in settings.modalities}
    return ct_path, hu, plans


@pytest.mark.parametrize('modality', ['photon', 'proton'])
def test_synthetic_ct_equal_to_the_ct_gives_exactly_the_ct_dose(water, modality):
    ct_path, _, plans = water
    plan = plans[modality]
    assert np.array_equal(recompute(plan, ct_path), plan.dose_ct)
    assert plan.dose_ct.shape == SHAPE and plan.spacing_mm == (1.0, 1.0, 1.0)
    assert abs(plan.dose_ct[plan.target].mean() / 60.0 - 1) < 0.05       # the optimiser met the prescription


def distal_80(profile: np.ndarray) -> float:
    """The depth index (interpolated) where the dose falls to 80 % of its maximum beyond the peak; the beam
    travels towards low y."""
    j = int(np.argmax(profile))
    level = 0.8 * profile[j]
    while profile[j - 1] >= level:
        j -= 1
    return j - 1 + (level - profile[j - 1]) / (profile[j] - profile[j - 1])


def test_a_dense_slab_moves_the_proton_falloff_by_its_water_equivalent_thickness(water):
    from pyRadPlan.ct._hlut import default_hlut      # the engine's HU -> relative stopping power table
    table = default_hlut()
    hu_points, rsp_points = table[:, 0], table[:, 1]
    # by hand: 1000 HU lies between the table's 350 HU and 3000 HU points
    i = int(np.searchsorted(hu_points, SLAB_HU))
    rsp = rsp_points[i - 1] + (SLAB_HU - hu_points[i - 1]) * (rsp_points[i] - rsp_points[i - 1]) / (
        hu_points[i] - hu_points[i - 1])
    wet_extra_mm = 6 * (rsp - 1)                      # 6 mm of slab minus the 6 mm of water it replaces
    assert 3.0 < wet_extra_mm < 3.3
    _, hu, plans = water
    sct = hu.copy()
    sct[SLAB] = SLAB_HU
    plan = plans['proton']
    axis = (slice(6, 8), slice(None), slice(6, 8))
    before = distal_80(plan.dose_ct[axis].mean(axis=(0, 2)))
    after = distal_80(recompute_hu(plan, sct)[axis].mean(axis=(0, 2)))
    assert abs((after - before) - wet_extra_mm) < 1.0        # mm (1 mm voxels): pulled back upstream


def test_photons_are_less_sensitive_than_protons_to_the_same_error(water):
    _, hu, plans = water
    sct = hu.copy()
    sct[SLAB] = SLAB_HU
    change = {}
    for modality, plan in plans.items():
        change[modality] = float(np.abs(recompute_hu(plan, sct) - plan.dose_ct)[plan.target].mean()) / 60.0
    assert 0 < change['photon'] < change['proton'] / 2


def test_the_dose_does_not_depend_on_how_the_ct_file_is_stored(tmp_path):
    """The same world volume stored RAS and LPS (axes 0 and 1 flipped), an oblique proton field through an
    off-centre bone: the same dose in the world, voxel for voxel (the dose grids cover the same points)."""
    shape = (15, 41, 13)
    hu = np.full(shape, -1000.0, np.float32)
    hu[1:-1, 1:-1, 1:-1] = 0.0
    hu[3:6, 5:9, 2:5] = 800.0
    target = np.zeros(shape, bool)
    target[5:9, 20:26, 4:8] = True
    ras, lps = np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0, 1.0])
    ras[:3, 3], lps[:3, 3] = [-7, -20, -6], [7, 20, -6]
    flip = (slice(None, None, -1), slice(None, None, -1), slice(None))
    settings = DoseSettings(grid_mm=2.0, modalities=('proton',), proton_gantry_deg=(30.0,), max_iter=30)
    doses = []
    for name, affine, index in (('ras', ras, ...), ('lps', lps, flip)):
        path = nifti(tmp_path / f'{name}.nii.gz', hu[index], affine)
        plan = plan_on_ct(path, Structures(hu[index] > -500, target[index], 'automatic'), 'proton', settings, None)
        doses.append(plan.dose_ct[index])
    assert doses[0].max() > 50 and np.array_equal(doses[0], doses[1])


def test_the_automatic_target_is_a_ball_at_the_deepest_point_of_the_body():
    body = np.zeros((25, 15, 35), bool)
    body[2:23, 2:13, 2:33] = True               # 21 x 11 x 31 voxels of 4 mm: deepest 24 mm along a segment
    spacing = (4.0, 4.0, 4.0)
    target = automatic_target(body, spacing, radius_mm=8.0)
    assert np.array_equal(automatic_target(body, spacing, radius_mm=8.0), target)       # the same every run
    assert target.sum() == 33                   # lattice points of a ball of radius 2 voxels
    assert np.array_equal(np.argwhere(target).mean(axis=0), [12, 7, 17])      # the box's centre
    assert not (target & ~body).any()
    with pytest.raises(DoseError, match='too small for an automatic target of radius 15 mm'):
        automatic_target(body, spacing, radius_mm=15.0)       # 24 mm deep < 15 + 10


def test_the_target_file_wins_over_the_automatic_target(tmp_path):
    ct = np.full((20, 20, 20), -1000.0, np.float32)
    ct[1:-1, 1:-1, 1:-1] = 40.0
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    folder = tmp_path / 's1'
    folder.mkdir()
    ct_path = nifti(folder / 'ct.nii.gz', ct, affine)
    img = nib.load(ct_path)
    settings = DoseSettings(target_radius_mm=8.0)
    automatic = subject_structures(str(folder), 's1', ct_path, ct, img, settings)
    assert automatic.target_source == 'automatic' and automatic.target.sum() == 33 and automatic.oars == {}
    mine = np.zeros(ct.shape)
    mine[4:7, 5:9, 6:8] = 1
    nifti(folder / 'target.nii.gz', mine, affine)
    organ = np.zeros(ct.shape)
    organ[10:12, 10:12, 10:12] = 1
    nifti(folder / 'oar_brainstem.nii.gz', organ, affine)
    found = subject_structures(str(folder), 's1', ct_path, ct, img, settings)
    assert found.target_source == str(folder / 'target.nii.gz')
    assert np.array_equal(found.target, mine > 0)
    assert list(found.oars) == ['brainstem'] and np.array_equal(found.oars['brainstem'], organ > 0)
    nifti(folder / 'target.nii.gz', np.zeros(ct.shape), affine)
    with pytest.raises(DoseError, match='target.nii.gz: the target mask is empty'):
        subject_structures(str(folder), 's1', ct_path, ct, img, settings)
    outside = np.zeros(ct.shape)
    outside[0, :, :] = 1                        # the air layer around the body
    nifti(folder / 'target.nii.gz', outside, affine)
    with pytest.raises(DoseError, match='the target lies outside the body'):
        subject_structures(str(folder), 's1', ct_path, ct, img, settings)
    nifti(folder / 'target.nii.gz', mine, np.diag([4.0, 4.0, 5.0, 1.0]))
    with pytest.raises(DoseError, match='target.nii.gz is not on the voxel grid of the CT .*ct.nii.gz'):
        subject_structures(str(folder), 's1', ct_path, ct, img, settings)


class StubProblem:
    """Stands in for the engine: counts its uses; its plan is two beamlets, its dose the HU + 1000 (water: 1000)."""
    made = 0

    def __init__(self, hu, affine, body, target, oars, modality, settings):
        StubProblem.made += 1
        self.hu = hu

    def optimise(self):
        return {'beams': [{'gantry_angle': 0.0}]}, np.array([0.5, 2.0])

    def dose(self, stf, weights):
        return (self.hu + 1000.0).astype(np.float32)


@pytest.fixture
def stub_case(tmp_path, monkeypatch):
    """(CT file, structures, settings) of a small water box, the engine replaced by StubProblem."""
    monkeypatch.setattr(engine, 'Problem', StubProblem)
    StubProblem.made = 0
    ct = np.zeros((12, 12, 12), np.float32)
    body = np.ones(ct.shape, bool)
    target = np.zeros(ct.shape, bool)
    target[4:8, 4:8, 4:8] = True
    return nifti(tmp_path / 'ct.nii.gz', ct), Structures(body, target, 'automatic'), DoseSettings(grid_mm=2.0)


def test_the_plan_is_cached_and_reused_until_a_setting_changes(stub_case, tmp_path):
    ct_path, structures, settings = stub_case
    cache = str(tmp_path / 'cache')
    first = plan_on_ct(ct_path, structures, 'photon', settings, cache)
    assert first.record['cache'] == 'miss' and StubProblem.made == 2          # optimised, then its dose
    again = plan_on_ct(ct_path, structures, 'photon', settings, cache)
    assert again.record['cache'] == 'hit' and StubProblem.made == 2           # the engine was not called
    assert np.array_equal(again.dose_ct, first.dose_ct) and np.array_equal(again.weights, [0.5, 2.0])
    assert again.stf == {'beams': [{'gantry_angle': 0.0}]}
    assert again.dose_ct.shape == (6, 6, 6) and np.allclose(again.dose_affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    other = DoseSettings(grid_mm=2.0, prescription_gy=50.0)
    assert plan_on_ct(ct_path, structures, 'photon', other, cache).record['cache'] == 'miss'
    assert plan_on_ct(ct_path, structures, 'proton', settings, cache).record['cache'] == 'miss'
    key = first.record['cache_key']
    (tmp_path / 'cache' / f'{key}.npz').write_bytes(b'not an npz')      # a damaged entry is a miss, rewritten
    assert plan_on_ct(ct_path, structures, 'photon', settings, cache).record['cache'] == 'miss'
    assert plan_on_ct(ct_path, structures, 'photon', settings, cache).record['cache'] == 'hit'
    stored = json.loads((tmp_path / 'cache' / f'{key}.json').read_text())
    assert stored['record']['grid_mm'] == 2.0 and stored['record']['gantry_deg'] == list(settings.photon_gantry_deg)


def test_bad_input_is_one_clear_error(stub_case, tmp_path, monkeypatch):
    ct_path, structures, settings = stub_case
    plan = plan_on_ct(ct_path, structures, 'photon', settings, None)
    shifted = nifti(tmp_path / 'sct.nii.gz', np.zeros((12, 12, 12)), np.diag([1.0, 1.0, 1.5, 1.0]))
    with pytest.raises(DoseError, match=r'sct.nii.gz is not on the voxel grid of the CT .*ct.nii.gz'):
        recompute(plan, shifted)
    with pytest.raises(DoseError, match='s7: no CT to plan on'):
        require_ct(None, 's7')
    monkeypatch.setattr(engine, '_PYRADPLAN', None)
    monkeypatch.setitem(__import__('sys').modules, 'pyRadPlan', None)
    with pytest.raises(DoseEngineMissing, match='bash scripts/setup.sh'):
        engine.pyradplan()
    monkeypatch.setattr(plan_module, 'version', lambda name: (_ for _ in ()).throw(
        plan_module.PackageNotFoundError(name)))
    with pytest.raises(DoseEngineMissing, match='pip install --no-deps pyradplan==0.5.0'):
        plan_module.engine_version()


def test_the_dose_grid_samples_the_ct_every_grid_mm():
    grid = DoseGrid.of(np.diag([1.0, 1.0, 1.0, 1.0]), (10, 7, 4), 3.0)
    assert grid.shape == (4, 3, 2) and grid.spacing_mm == (3.0, 3.0, 3.0)
    assert np.allclose(grid.affine, np.diag([3.0, 3.0, 3.0, 1.0]))
    ramp = np.broadcast_to(np.arange(10.0)[:, None, None], (10, 7, 4))
    assert np.allclose(grid.sample(ramp)[1:3, 1, 0], [3.0, 6.0])      # box mean of a ramp: the ramp, inside
    thin = np.zeros((10, 7, 4))
    thin[6] = 300.0                              # a 1 mm bone between two dose voxels' centres is not skipped
    assert grid.sample(thin)[2, 1, 1] == pytest.approx(100.0)
