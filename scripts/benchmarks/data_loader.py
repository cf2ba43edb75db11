"""``benchmark.py data``: triplanar slices per second from the training loader with 0 and 2 workers, and the memory
of the main process and of the workers."""
from __future__ import annotations

import argparse
import time

from scripts.benchmarks.timing import children_rss_mb, peak_memory_mb, run_config


def run_data_config(cfg: dict) -> dict:
    """Slices per second from a shuffled loader over the triplanar demo data (256x256, batch 4) with
    ``cfg['workers']`` workers, after the first batch (slice-store building and worker start-up excluded);
    peak resident memory of this process and resident memory of the live workers (MB, Linux /proc)."""
    import contextlib
    import io
    from data import create_dataset
    from options.train_options import TrainOptions
    args = ['--model', 'pix2pix', '--dataset_mode', 'triplanar_aligned', '--gpu_ids', '-1', '--display_id', '0',
            '--checkpoints_dir', cfg['tmp'], '--name', 'bench', '--num_threads', str(cfg['workers']),
            '--batch_size', '4', '--input_nc', '1', '--output_nc', '1'] + cfg['extra']
    with contextlib.redirect_stdout(io.StringIO()):
        loader = create_dataset(TrainOptions().parse(args))
    n, start, workers_mb, epoch = 0, None, 0.0, 1
    while n < cfg['max_items']:
        loader.set_epoch(epoch)
        for data in loader:
            if start is None:
                start = time.perf_counter()
                continue
            n += data['A'].shape[0]
            if n % 80 < 4:  # workers live only while the epoch runs
                workers_mb = max(workers_mb, children_rss_mb())
            if n >= cfg['max_items']:
                break
        epoch += 1
    return {'slices_per_s': n / (time.perf_counter() - start), 'slices': n, 'peak_mb': peak_memory_mb('cpu'),
            'workers_mb': workers_mb}


def bench_data(args: argparse.Namespace) -> None:
    import tempfile
    tmp = tempfile.mkdtemp(prefix='bench_')
    for workers in (0, 2):
        r = run_config('data', {'tmp': tmp, 'workers': workers, 'max_items': 300 if args.quick else 3000,
                                    'extra': args.extra})
        if 'error' in r:
            print(f'triplanar_aligned, {workers} workers: failed: {r["error"]}')
            continue
        print(f'triplanar_aligned 256x256, {workers} workers: {r["slices_per_s"]:8.1f} slices/s over {r["slices"]} '
              f'slices, peak RSS {r["peak_mb"]:.0f} MB main process + {r["workers_mb"]:.0f} MB workers')
