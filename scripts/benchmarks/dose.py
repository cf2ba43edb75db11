"""``benchmark.py dose``: seconds per subject of the dose evaluation (evaluation/dose/, pyRadPlan on the CPU):
planning on the CT (beams, dose influence, fluence optimisation, CT dose) and recomputing the plan on a synthetic
CT, photons and protons, at the demo data's size and at SynthRAD brain size, each in a fresh process. Each step is
timed in wall seconds and in CPU seconds of the process (all its threads: on a machine shared with other jobs, the
CPU seconds are what the step costs, and at most its wall time on an idle one); a fixed reference operation is
timed in the same process, so that runs compare by ratio too."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from scripts.benchmarks.timing import peak_memory_mb, run_config

# (label, voxels at the first spacing, spacing mm, subject index: 1 is stored LPS, 0 RAS; see data/demo_data.py)
SIZES = {'demo': ('demo data (48x56x40 at 4 mm)', None, None, 1),
         'synthrad': ('SynthRAD brain size (256x256x200 at 1 mm)', (256, 256, 200), (1.0, 1.0, 1.0), 0)}
SCT_ERROR_HU = 40.0         # the synthetic CT of the benchmark: the CT, 40 HU too dense inside the body


def reference_seconds() -> float:
    """The fixed reference operation: the fastest of 3 Gaussian filters (sigma 2) of a 96^3 float32 volume, in CPU
    seconds."""
    import numpy as np
    from scipy import ndimage
    volume = np.random.default_rng(0).random((96, 96, 96), dtype=np.float32)
    times = []
    for _ in range(3):
        start = time.process_time()
        ndimage.gaussian_filter(volume, 2.0)
        times.append(time.process_time() - start)
    return min(times)


def run_dose_config(cfg: dict) -> dict:
    """Plan ``cfg['modality']`` on the CT of subject folder ``cfg['subject_dir']`` (automatic target, default
    settings, no cache), then recompute it twice on the CT made 40 HU denser in the body; seconds of each step,
    the reference operation's before and after."""
    import nibabel as nib
    import numpy as np
    from evaluation.dose.engine import pyradplan
    from evaluation.dose.plan import plan_on_ct, recompute_hu
    from evaluation.dose.settings import DoseSettings
    from evaluation.dose.structures import subject_structures
    reference = [reference_seconds()]
    start = time.perf_counter()
    pyradplan()
    import_s = time.perf_counter() - start
    ct_path = os.path.join(cfg['subject_dir'], 'ct.nii.gz')
    img = nib.load(ct_path)
    ct = np.asarray(img.dataobj, np.float32)
    settings = DoseSettings(modalities=(cfg['modality'],))
    structures = subject_structures(cfg['subject_dir'], 'bench', ct_path, ct, img, settings)
    start, cpu = time.perf_counter(), time.process_time()
    plan = plan_on_ct(ct_path, structures, cfg['modality'], settings, None)
    plan_s, plan_cpu = time.perf_counter() - start, time.process_time() - cpu
    sct = np.where(structures.body, ct + SCT_ERROR_HU, ct)
    recompute, recompute_cpu = [], []
    for _ in range(2):
        start, cpu = time.perf_counter(), time.process_time()
        dose = recompute_hu(plan, sct)
        recompute.append(time.perf_counter() - start)
        recompute_cpu.append(time.process_time() - cpu)
    reference.append(reference_seconds())
    return {'import_s': import_s, 'plan_s': plan_s, 'plan_cpu_s': plan_cpu, 'optimise_s': plan.record['optimise_s'],
            'recompute_s': recompute, 'recompute_cpu_s': recompute_cpu, 'reference_s': min(reference),
            'beamlets': plan.record['beamlets'], 'ct_shape': list(ct.shape), 'grid_shape': list(plan.grid.shape),
            'target_change': float(np.abs(dose - plan.dose_ct)[plan.target].mean() / plan.prescription_gy),
            'peak_mb': peak_memory_mb('cpu')}


def bench_dose(args: argparse.Namespace) -> None:
    """Each size (``--quick``: the demo size only) and modality in a fresh process; a table of seconds and of
    seconds per reference operation."""
    from data.demo_data import make_synthrad
    tmp = tempfile.mkdtemp(prefix='bench_dose_')
    sizes = ['demo'] if args.quick else list(SIZES)
    print(f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, {os.cpu_count()} CPUs; default '
          f'settings (3 mm grid, automatic 20 mm target); synthetic CT = CT + {SCT_ERROR_HU:g} HU in the body',
          flush=True)
    print('| size | modality | dose grid | beamlets | plan on the CT: CPU s (wall s) | recompute on an sCT: CPU s '
          '(wall s) | reference op, CPU s | plan / ref | recompute / ref | peak MB |')
    print('|---|---|---|---|---|---|---|---|---|---|', flush=True)
    for size in sizes:
        label, shape, spacing, index = SIZES[size]
        root = os.path.join(tmp, size)
        make_synthrad(root, index + 1, 2024, shape, (spacing, spacing) if spacing else None)
        subject_dir = os.path.join(root, f'demo{index + 1:03d}')
        for modality in ('photon', 'proton'):
            r = run_config('dose', {'subject_dir': subject_dir, 'modality': modality})
            if 'error' in r:
                print(f'| {label} | {modality} | failed: {r["error"]} |', flush=True)
                continue
            recompute = min(r['recompute_cpu_s'])
            print(f'| {label} | {modality} | {"x".join(map(str, r["grid_shape"]))} | {r["beamlets"]} | '
                  f'{r["plan_cpu_s"]:.1f} ({r["plan_s"]:.0f}) | {recompute:.1f} ({min(r["recompute_s"]):.0f}) | '
                  f'{r["reference_s"]:.3f} | {r["plan_cpu_s"] / r["reference_s"]:.0f} | '
                  f'{recompute / r["reference_s"]:.0f} | {r["peak_mb"]:.0f} |', flush=True)
