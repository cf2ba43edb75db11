"""``benchmark.py predict``: seconds to synthesise one cubic volume along x, y and z with scripts/predict.py's code
path (inference.predictor): MRNet at the quick-start settings on the CPU; with ``--device cuda`` also the paper's
MRNet with SAM at 1024, plain and compiled."""
from __future__ import annotations

import argparse
import os
import time

from scripts.benchmarks.timing import peak_memory_mb, run_config, synchronizer


def run_predict_config(cfg: dict) -> dict:
    """Seconds to synthesise one ``cfg['side']``^3 MR phantom (3 planes, every body slice) with scripts/predict.py's
    code path (inference.predictor), after saving and reloading an untrained generator of ``cfg['extra']`` options;
    model loading and the first batch (warm-up) are excluded by timing a second run."""
    import contextlib
    import io
    import numpy as np
    from models import create_model
    from options.train_options import TrainOptions
    from util.image_io import reference_image
    from inference.loading import load_generator
    from inference.predictor import predict_volume
    gpu = '0' if cfg['device'].startswith('cuda') else '-1'
    args = ['--model', 'mrnet', '--gpu_ids', gpu, '--display_id', '0', '--checkpoints_dir', cfg['tmp'],
            '--name', 'bench_predict', '--crop_size', '256'] + cfg['extra']
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        opt = TrainOptions().parse(args)
        model = create_model(opt)
        model.save_networks('latest')
        generator = load_generator(cfg['tmp'], 'bench_predict', 'latest', opt.device)
    side = cfg['side']
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing='ij'))
    r = np.sqrt(((grid / 0.85) ** 2).sum(0))
    volume = np.where(r < 1, 500 + 200 * grid[1], 20).astype(np.float32)
    reference = reference_image(volume, np.diag([1.0, 1.0, 1.0, 1.0]))
    sync = synchronizer(opt.device.type == 'cuda')

    def once() -> tuple[float, int]:
        start = time.perf_counter()
        result = predict_volume(generator, volume, reference, batch_size=cfg['batch'], progress=False)
        sync()
        return time.perf_counter() - start, result.n_slices
    if cfg['warmup']:
        once()
    seconds, slices = once()
    return {'seconds': seconds, 'slices': slices, 'peak_mb': peak_memory_mb(cfg['device'])}


def bench_predict(args: argparse.Namespace) -> None:
    """CPU: MRNet at the quick-start settings (ngf 16, SAM ViT-B at 256); with --device cuda also the paper's
    MRNet (ngf 64) with SAM at 1024 (bf16 autocast inside SAM), the goal being under 10 s per volume."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix='bench_')
    args.batch = args.batch or 16
    side = 64 if args.quick else args.side
    configs = [('cpu', 'MRNet quick-start (ngf 16, SAM 256) on the CPU', ['--ngf', '16', '--sam_input_size', '256'])]
    if args.device.startswith('cuda'):
        configs.append((args.device, 'MRNet (ngf 64, SAM 1024, bf16) on the GPU', ['--ngf', '64',
                                                                                 '--sam_input_size', '1024']))
        configs.append((args.device, 'the same, SAM compiled (--compile)', ['--ngf', '64', '--sam_input_size', '1024',
                                                                           '--compile']))
    print(f'one {side}^3 volume, planes x, y, z, batch {args.batch}; torch threads: '
          f'{os.environ.get("OMP_NUM_THREADS", "default")}', flush=True)
    for device, label, extra in configs:
        if args.skip_cpu and device == 'cpu':
            continue
        r = run_config('predict', {'tmp': tmp, 'device': device, 'side': side, 'batch': args.batch,
                                       'warmup': not args.quick, 'extra': extra + args.extra})
        if 'error' in r:
            print(f'{label:<50} failed: {r["error"]}', flush=True)
            continue
        print(f'{label:<50} {r["seconds"]:8.1f} s/volume  {r["slices"]} slices  '
              f'{r["slices"] / r["seconds"]:7.1f} slices/s  peak {r["peak_mb"]:.0f} MB', flush=True)
