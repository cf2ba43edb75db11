"""``benchmark.py cache``: training epochs of pix2pix, MRNet --no_sam, MRNet without the SAM feature cache, and
MRNet building and then reading it, on the same slices; the ratios the cache is judged by."""
from __future__ import annotations

import argparse
import os
import time

from scripts.benchmarks.timing import peak_memory_mb, run_config, synchronizer


def run_epoch_config(cfg: dict) -> dict:
    """Train ``cfg['epochs']`` epochs of a model over the same triplanar demo slices (``--max_dataset_size``),
    after ``cfg['warmup']`` untimed steps on random data; seconds per epoch. An epoch's time includes
    ``model.prepare_data`` (MRNet: building the missing part of the SAM feature cache)."""
    import contextlib
    import io
    import torch
    from data import create_dataset
    from models import create_model
    from options.train_options import TrainOptions
    if cfg.get('threads'):
        torch.set_num_threads(cfg['threads'])
    gpu = '0' if cfg['device'].startswith('cuda') else '-1'
    args = ['--model', cfg['model'], '--dataset_mode', 'triplanar_aligned', '--gpu_ids', gpu, '--display_id', '0',
            '--checkpoints_dir', cfg['tmp'], '--name', 'bench', '--batch_size', str(cfg['batch']),
            '--max_dataset_size', str(cfg['slices']), '--num_threads', str(cfg['workers']), '--ngf', str(cfg['ngf']),
            '--input_nc', '3', '--output_nc', '3'] + cfg['extra']
    with contextlib.redirect_stdout(io.StringIO()):
        opt = TrainOptions().parse(args)
        loader = create_dataset(opt)
        model = create_model(opt)
        model.setup(opt)
    sync = synchronizer(opt.device.type == 'cuda')
    side = opt.crop_size
    noise = {'A': torch.rand(cfg['batch'], 3, side, side) * 2 - 1, 'B': torch.rand(cfg['batch'], 3, side, side) * 2 - 1,
             'A_paths': ['x'] * cfg['batch'], 'B_paths': ['x'] * cfg['batch']}
    for _ in range(cfg['warmup']):
        model.set_input(noise)
        model.train_step()
    epochs = []
    for epoch in range(1, cfg['epochs'] + 1):
        sync()
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            model.prepare_data(loader)
        loader.set_epoch(epoch)
        for data in loader:
            model.set_input(data)
            model.train_step()
        sync()
        epochs.append(time.perf_counter() - start)
    return {'epoch_s': epochs, 'slices': len(loader), 'peak_mb': peak_memory_mb(cfg['device'])}


def bench_cache(args: argparse.Namespace) -> None:
    """pix2pix unet_256, MRNet --no_sam, MRNet without the SAM cache and MRNet reading the cache (built by its
    first epoch of round 1), each in a fresh process on the same slices, batch, loader, threads and generator
    width; ``--rounds`` times, in turn (the slow uncached MRNet only in round 1). A configuration's figure is its
    fastest epoch over all rounds (the building epoch is timed apart), so a burst of load from other jobs on a
    shared machine does not decide a ratio; each round's own ratio is printed too."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix='bench_')
    args.batch = args.batch or 4
    slices = 8 if args.quick else args.slices
    rounds, epochs = (1, 1) if args.quick else (args.rounds, args.epochs)
    base = {'device': args.device, 'tmp': tmp, 'batch': args.batch, 'slices': slices, 'ngf': args.ngf,
            'workers': args.workers, 'threads': args.threads, 'warmup': 1 if args.quick else args.warmup}
    sam = ['--sam_input_size', str(args.sam_size), '--sam_batch_size', str(args.sam_batch)] + args.extra
    cache = os.path.join(tmp, 'sam_cache')
    print(f'device: {args.device}; {slices} triplanar demo slices, batch {args.batch}, ngf {args.ngf}, SAM input '
          f'{args.sam_size}, {args.threads or "default"} threads; {rounds} round(s), fastest epoch counts',
          flush=True)
    runs = [('pix2pix unet_256', 'pix2pix', epochs, ['--netG', 'unet_256'] + args.extra),
            ('mrnet --no_sam', 'mrnet', epochs, ['--no_sam'] + args.extra),
            ('mrnet, no cache (--sam_cache off)', 'mrnet', 1, sam + ['--sam_cache', 'off']),
            ('mrnet, reading the cache', 'mrnet', epochs, sam + ['--sam_cache', cache])]
    best: dict[str, float] = {}
    build = None
    for round_ in range(1, rounds + 1):
        this: dict[str, float] = {}
        for label, model, n, extra in runs:
            if round_ > 1 and label == runs[2][0]:
                continue                    # the slow uncached epoch only judges the building epoch: once
            building = label == runs[-1][0] and round_ == 1
            r = run_config('epoch', {**base, 'model': model, 'epochs': n + building, 'extra': extra})
            if 'error' in r:
                print(f'{label:<42} failed: {r["error"]}', flush=True)
                continue
            times = r['epoch_s'][1:] if building else r['epoch_s']
            build = r['epoch_s'][0] if building else build
            this[label] = min(times)
            best[label] = min(best.get(label, float('inf')), this[label])
            shown = ', '.join(f'{t:.1f}' for t in r['epoch_s'])
            print(f'round {round_}: {label:<42} epoch s: {shown}{" (first builds the cache)" if building else ""}  '
                  f'peak {r["peak_mb"]:.0f} MB', flush=True)
        _print_cache_ratios(f'round {round_}', [this.get(label) for label, *_ in runs], build)
    if rounds > 1:
        _print_cache_ratios('fastest epochs', [best.get(label) for label, *_ in runs], build)


def _print_cache_ratios(title: str, seconds: list[float | None], build: float | None) -> None:
    """The ratios the SAM cache is judged by, from epoch seconds of [pix2pix, --no_sam, uncached, cached]."""
    p2p, no_sam, plain, cached = seconds
    print(f'{title}:', flush=True)
    if p2p and cached:
        print(f'  MRNet epoch reading the cache / pix2pix epoch: x{cached / p2p:.2f} (target <= 1.4)')
    if p2p and no_sam:
        print(f'  MRNet --no_sam epoch / pix2pix epoch: x{no_sam / p2p:.2f}')
    if no_sam and cached:
        print(f'  MRNet epoch reading the cache / --no_sam epoch: x{cached / no_sam:.2f} (the cached SAM branch)')
    if plain and build:
        print(f'  MRNet first epoch (building the cache) / uncached epoch: x{build / plain:.2f} (target <= 1.10)')
    if plain and cached:
        print(f'  MRNet epoch reading the cache / uncached epoch: x{cached / plain:.2f}', flush=True)
