"""Speed and memory benchmarks (not tests: these machines are noisy, so compare ratios taken in one run).

    python scripts/benchmark.py train --device cuda              # every model of the paper's Tables II-III at
                                                                 # batch 4, 256x256 (MRNet: SAM 1024, cached and
                                                                 # not): fp32, bf16, bf16 + compile; slices/s, peak
                                                                 # memory, TFLOP/s, hours of the paper's protocol
    python scripts/benchmark.py train --models pix2pix,mrnet --code /tmp/main --threads 1
                                                                 # the same steps with another code tree, in turn:
                                                                 # the step-time ratio (CPU cost of a change)
    python scripts/benchmark.py data                             # triplanar slices/s with 0 and 2 workers
    python scripts/benchmark.py predict                          # seconds per ~256^3 volume, 3 planes: MRNet at
                                                                 # the quick-start settings on the CPU; with
                                                                 # --device cuda also SAM 1024 (bf16), ngf 64
    python scripts/benchmark.py cache                            # epochs: pix2pix, MRNet --no_sam, without /
                                                                 # building / reading the SAM feature cache (same
                                                                 # slices; rounds in turn, fastest epoch counts)
    python scripts/benchmark.py sam --device cuda --sam_size 1024 --sam_batch 8
                                                                 # SAM encoder images/s: segment_anything's
                                                                 # and ours (SDPA), bf16, with/without compile

Each configuration runs in a fresh process so its peak memory is its own (CPU: peak RSS; GPU: peak allocated).
Add ``--device cuda`` on a machine with a GPU; ``--quick`` shortens every run for a smoke check.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from evaluation.comparison.plan import PAPER_MODELS  # noqa: E402


def _peak_memory_mb(device: str) -> float:
    import torch
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_train_config(cfg: dict) -> dict:
    """Time ``cfg['iters']`` training steps of one configuration on random data at the paper's settings.

    ``cfg['amp']``: 'off', 'bf16' or 'fp16' (--amp), ``cfg['compile']`` (--compile), ``cfg['cached']``: MRNet reads
    its SAM features as the cache gives them (float16 (N, 256, S/16, S/16), no SAM call) instead of running SAM.
    The batch sits in pinned memory on a GPU, as the loader gives it. The FLOPs of one step are counted with
    torch.utils.flop_counter (uncompiled runs; the count does not depend on the precision)."""
    import contextlib
    import io
    import torch
    from models import create_model
    from options.train_options import TrainOptions
    if cfg.get('threads'):
        torch.set_num_threads(cfg['threads'])
    gpu = '0' if cfg['device'].startswith('cuda') else '-1'
    args = ['--model', cfg['model'], '--gpu_ids', gpu, '--batch_size', str(cfg['batch']), '--display_id', '0',
            '--checkpoints_dir', cfg['tmp'], '--name', 'bench', '--crop_size', str(cfg['size'])] + cfg['extra']
    if cfg.get('amp', 'off') != 'off':
        args += ['--amp', cfg['amp']]          # only then: the flag is unknown to code before --amp existed
    if cfg.get('compile'):
        args += ['--compile']
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        opt = TrainOptions().parse(args)
        model = create_model(opt)
        model.setup(opt)
    cuda = opt.device.type == 'cuda'
    n, size = cfg['batch'], cfg['size']
    batch = {'A': torch.rand(n, opt.input_nc, size, size) * 2 - 1, 'B': torch.rand(n, opt.output_nc, size, size) * 2 - 1,
             'A_paths': ['x'] * n, 'B_paths': ['x'] * n}
    if cfg.get('cached'):
        encoder = model.unwrap('G').sam
        side = encoder.input_size // 16
        batch['sam_feature'] = torch.randn(n, encoder.out_channels, side, side).half()
        batch['sam_cached'] = torch.ones(n, dtype=torch.bool)
    if cuda:
        batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step_fn = getattr(model, 'train_step', None) or model.optimize_parameters   # also code before train_step

    def step():
        model.set_input(batch)
        step_fn()
    for _ in range(cfg['warmup']):
        step()
    flops = None
    if not cfg.get('compile'):
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    if cfg.get('serve'):                        # paired timing (bench_train --code): one step per line of stdin
        print('ready', flush=True)
        for _ in sys.stdin:
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
            print(times[-1], flush=True)
    start = time.perf_counter()
    for _ in range(cfg['iters']):
        step()
    sync()
    seconds = (time.perf_counter() - start) / cfg['iters'] if cfg['iters'] else sum(times) / max(1, len(times))
    params = sum(p.numel() for name in model.model_names if name.startswith('G')
                 for p in model.unwrap(name).parameters())
    return {'step_s': seconds, 'it_per_s': 1 / seconds, 'slices_per_s': n / seconds,
            'peak_mb': _peak_memory_mb(cfg['device']), 'params_G': params, 'flops': flops,
            'device_name': torch.cuda.get_device_name() if cuda else 'CPU'}


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
                workers_mb = max(workers_mb, _children_rss_mb())
            if n >= cfg['max_items']:
                break
        epoch += 1
    return {'slices_per_s': n / (time.perf_counter() - start), 'slices': n, 'peak_mb': _peak_memory_mb('cpu'),
            'workers_mb': workers_mb}


def run_predict_config(cfg: dict) -> dict:
    """Seconds to synthesise one ``cfg['side']``^3 MR phantom (3 planes, every body slice) with scripts/predict.py's
    code path (inference.predictor), after saving and reloading an untrained generator of ``cfg['extra']`` options;
    model loading and the first batch (warm-up) are excluded by timing a second run."""
    import contextlib
    import io
    import numpy as np
    import torch
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

    def once() -> tuple[float, int]:
        start = time.perf_counter()
        result = predict_volume(generator, volume, reference, batch_size=cfg['batch'], progress=False)
        if opt.device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start, result.n_slices
    once() if cfg['warmup'] else None
    seconds, slices = once()
    return {'seconds': seconds, 'slices': slices, 'peak_mb': _peak_memory_mb(cfg['device'])}


def _children_rss_mb() -> float:
    """Summed resident memory (MB) of this process's live child processes, read from /proc."""
    total, me = 0, str(os.getpid())
    for entry in os.listdir('/proc') if os.path.isdir('/proc') else []:
        try:
            with open(f'/proc/{entry}/status') as f:
                fields = dict(line.split(':', 1) for line in f if ':' in line)
        except OSError:
            continue
        if fields.get('PPid', '').strip() == me:
            total += int(fields.get('VmRSS', '0 kB').split()[0])
    return total / 1024


def _in_subprocess(kind: str, cfg: dict) -> dict:
    """Run one configuration in a fresh process; a failure (e.g. killed for memory) is returned as {'error': ...}."""
    out = subprocess.run([sys.executable, __file__, '_one', kind, json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode != 0:
        why = 'killed (out of memory?)' if out.returncode < 0 else (out.stderr.strip().splitlines() or ['?'])[-1]
        return {'error': f'exit {out.returncode}: {why}'}
    return json.loads(out.stdout.strip().splitlines()[-1])


# name -> (model, extra flags, MRNet reads the SAM cache): the rows of the paper's Tables II and III
TRAIN_ROWS = {
    'mrnet': ('mrnet', [], True),
    'mrnet_uncached': ('mrnet', ['--sam_cache', 'off'], False),
    'pix2pix': ('pix2pix', ['--netG', 'unet_256'], False),
    'cycle_gan': ('cycle_gan', [], False),
    **{name: ('pix2pix', ['--netG', name, '--gan_mode', 'lsgan'], False)
       for name in ('tcgan', 'transunet', 'swin_unet', 'resvit', 'ppt')},
}
# what the paper trains on (Table I, section IV-A): 40 epochs over SynthRAD2023's 95,559 training slices (Table II);
# BraTS FLAIR -> T2 (Table III) on 371 training subjects' axial slices, 155 each (BraTS volumes are 240x240x155)
PAPER_EPOCHS = 40
PAPER_SLICES = {'II': 95_559, 'III': 371 * 155}


def _print_train_row(name: str, r: dict, ref: dict | None = None) -> None:
    if 'error' in r:
        print(f'{name:<45} failed: {r["error"]}', flush=True)
        return
    ratio = f'  x{r["step_s"] / ref["step_s"]:.2f} of pix2pix' if ref and 'step_s' in ref else ''
    print(f'{name:<45} {r["step_s"]:8.3f} s/step {r["it_per_s"]:8.3f} it/s  peak {r["peak_mb"]:8.0f} MB  '
          f'G params {r["params_G"] / 1e6:.2f} M{ratio}', flush=True)


def _split_sam_flags(extra: list[str]) -> tuple[list[str], list[str]]:
    """Flags passed through to the options (``--sam_*`` ones, with their values, go to the MRNet rows only)."""
    sam, other, target = [], [], None
    for token in extra:
        if token.startswith('--'):
            target = sam if token.startswith('--sam_') else other
        (target if target is not None else other).append(token)
    return sam, other


def _modes(text: str) -> list[tuple[str, bool]]:
    """'off,bf16,bf16+compile' -> [('off', False), ('bf16', False), ('bf16', True)]."""
    out = []
    for mode in text.split(','):
        amp, _, extra = mode.partition('+')
        if amp not in ('off', 'bf16', 'fp16') or extra not in ('', 'compile'):
            raise SystemExit(f'--amp_modes: {mode!r} is not off, bf16, fp16 or <mode>+compile')
        out.append((amp, extra == 'compile'))
    return out


def bench_train(args: argparse.Namespace) -> None:
    """Every row of the paper's tables (``--models``) at batch 4, 256x256 (MRNet: SAM ``--sam_size``, reading the
    cache and not), in each ``--amp_modes`` precision, each in a fresh process, in one run: seconds per step,
    slices/s, peak memory, GFLOP per step and the TFLOP/s achieved; then the hours the paper's Tables II and III
    would take at each mode. ``--code DIR`` instead runs every configuration in this tree and in DIR side by side,
    stepping in turn, and prints the step-time ratio this tree / DIR (the CPU-cost check of a change)."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix='bench_')
    iters, warmup = (1, 1) if args.quick else (args.iters, args.warmup)
    modes = _modes(args.amp_modes or ('off,bf16,bf16+compile' if args.device.startswith('cuda') else 'off'))
    names = list(PAPER_MODELS) + ['mrnet_uncached'] if args.models == 'paper' else args.models.split(',')
    unknown = [n for n in names if n not in TRAIN_ROWS]
    if unknown:
        raise SystemExit(f'--models: unknown {", ".join(unknown)}; choose from paper, {", ".join(TRAIN_ROWS)}')
    base = {'device': args.device, 'size': 256, 'tmp': tmp, 'iters': iters, 'warmup': warmup, 'batch': args.batch or 4,
            'threads': args.threads}
    sam = ['--sam_input_size', str(args.sam_size)]
    shared = ['--ngf', str(args.ngf)] if args.ngf else []
    sam_extra, other_extra = _split_sam_flags(args.extra)
    print(f'device: {args.device}; batch {base["batch"]}, 256x256, MRNet SAM input {args.sam_size}; {warmup} warm-up '
          f'and {iters} timed steps per configuration; threads {args.threads or "default"}', flush=True)
    if args.code:
        _bench_train_paired(args, names, modes, base, sam, shared, sam_extra, other_extra)
        return
    results: dict = {}
    for name in names:
        model, flags, cached = TRAIN_ROWS[name]
        extra = flags + shared + (sam + sam_extra if model == 'mrnet' else []) + other_extra
        for amp, compile_ in modes:
            cfg = {**base, 'model': model, 'extra': extra, 'cached': cached, 'amp': amp, 'compile': compile_}
            results[name, amp, compile_] = r = _in_subprocess('train', cfg)
            _print_mode_row(f'{name} {amp}{" + compile" if compile_ else ""}', r, results.get((name, 'off', False)))
    _print_paper_hours(results, names, modes)


def _bench_train_paired(args, names, modes, base, sam, shared, sam_extra, other_extra) -> None:
    """Each configuration in two live processes, this tree's and ``--code``'s, stepping in turn (``--rounds`` x
    ``--iters`` steps each, the order swapped every step), so load from other jobs hits both alike. The figure is
    the ratio of the means of each side's fastest quarter of steps (a step slowed by another job's burst does not
    count); the ratio of medians and the median of step-by-step ratios are printed too."""
    import statistics
    code = os.path.abspath(args.code)
    n_steps = args.rounds * args.iters
    print(f'step time, this tree / {code}: {n_steps} steps each, in turn', flush=True)
    for name in names:
        model, flags, cached = TRAIN_ROWS[name]
        extra = flags + shared + (sam + sam_extra if model == 'mrnet' else []) + other_extra
        for amp, compile_ in modes:
            cfg = {**base, 'model': model, 'extra': extra, 'cached': cached, 'amp': amp, 'compile': compile_,
                   'iters': 0, 'serve': True}
            procs = [subprocess.Popen([sys.executable, __file__, '_one', 'train', json.dumps({**cfg, 'code': c})],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for c in (None, code)]
            try:
                for proc in procs:
                    while (line := proc.stdout.readline()) and line.strip() != 'ready':
                        pass
                    if not line:
                        raise RuntimeError(f'{name}: a benchmark process ended before its first step')
                times: list[list[float]] = [[], []]
                for i in range(n_steps):
                    for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                        procs[k].stdin.write('step\n')
                        procs[k].stdin.flush()
                        times[k].append(float(procs[k].stdout.readline()))
            finally:
                for proc in procs:
                    proc.stdin.close()
                    proc.wait()
            ours, theirs = times
            quarter = max(1, n_steps // 4)
            fast = statistics.mean(sorted(ours)[:quarter]) / statistics.mean(sorted(theirs)[:quarter])
            ratio = statistics.median(ours) / statistics.median(theirs)
            stepwise = statistics.median(a / b for a, b in zip(ours, theirs))
            print(f'  {name} {amp}{" + compile" if compile_ else ""}: x{fast:.3f} (mean of the fastest quarter of '
                  f'steps, {statistics.mean(sorted(ours)[:quarter]):.4f} s vs '
                  f'{statistics.mean(sorted(theirs)[:quarter]):.4f} s); medians x{ratio:.3f}, median of step-by-step '
                  f'ratios x{stepwise:.3f}', flush=True)


def _print_mode_row(label: str, r: dict, fp32: dict | None) -> None:
    if 'error' in r:
        print(f'{label:<32} failed: {r["error"]}', flush=True)
        return
    flops = r['flops'] or (fp32 or {}).get('flops')            # compiled runs: the uncompiled count
    tflops = f'{flops / r["step_s"] / 1e12:7.2f} TFLOP/s ({flops / 1e9:.0f} GFLOP/step)' if flops else ''
    speedup = f'  x{fp32["step_s"] / r["step_s"]:.2f} of fp32' if fp32 and 'step_s' in fp32 and r is not fp32 else ''
    print(f'{label:<32} {r["step_s"]:8.4f} s/step {r["slices_per_s"]:8.1f} slices/s  peak {r["peak_mb"]:8.0f} MB  '
          f'{tflops}{speedup}  [{r["device_name"]}]', flush=True)


def _print_paper_hours(results: dict, names: list[str], modes: list) -> None:
    """Training hours of Tables II and III (40 epochs; MRNet reading the cache, plus one uncached epoch that builds
    it when that row was measured; validation not included) at each mode, for the rows measured."""
    print(f'the paper\'s protocol ({PAPER_EPOCHS} epochs; Table II {PAPER_SLICES["II"]:,} slices, Table III '
          f'{PAPER_SLICES["III"]:,}), training only, on this device:')
    for amp, compile_ in modes:
        speed = {name: results[name, amp, compile_]['slices_per_s'] for name in names
                 if 'slices_per_s' in results.get((name, amp, compile_), {})}
        hours = {}
        for name in PAPER_MODELS:
            if name in speed:
                seconds_per_slice = PAPER_EPOCHS / speed[name]
                if name == 'mrnet' and 'mrnet_uncached' in speed:
                    seconds_per_slice += 1 / speed['mrnet_uncached']      # the epoch that builds the cache
                hours[name] = {t: n * seconds_per_slice / 3600 for t, n in PAPER_SLICES.items()}
        if not hours:
            continue
        rows = ', '.join(f'{n} {h["II"]:.1f} + {h["III"]:.1f}' for n, h in hours.items())
        total = sum(h['II'] + h['III'] for h in hours.values())
        missing = [n for n in PAPER_MODELS if n not in hours]
        print(f'  {amp}{" + compile" if compile_ else ""}: {total:.1f} h for Tables II + III ({rows} h)'
              + (f'; not measured: {", ".join(missing)}' if missing else ''), flush=True)


def bench_data(args: argparse.Namespace) -> None:
    import tempfile
    tmp = tempfile.mkdtemp(prefix='bench_')
    for workers in (0, 2):
        r = _in_subprocess('data', {'tmp': tmp, 'workers': workers, 'max_items': 300 if args.quick else 3000,
                                    'extra': args.extra})
        if 'error' in r:
            print(f'triplanar_aligned, {workers} workers: failed: {r["error"]}')
            continue
        print(f'triplanar_aligned 256x256, {workers} workers: {r["slices_per_s"]:8.1f} slices/s over {r["slices"]} '
              f'slices, peak RSS {r["peak_mb"]:.0f} MB main process + {r["workers_mb"]:.0f} MB workers')


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
        r = _in_subprocess('predict', {'tmp': tmp, 'device': device, 'side': side, 'batch': args.batch,
                                       'warmup': not args.quick, 'extra': extra + args.extra})
        if 'error' in r:
            print(f'{label:<50} failed: {r["error"]}', flush=True)
            continue
        print(f'{label:<50} {r["seconds"]:8.1f} s/volume  {r["slices"]} slices  '
              f'{r["slices"] / r["seconds"]:7.1f} slices/s  peak {r["peak_mb"]:.0f} MB', flush=True)


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
    sync = torch.cuda.synchronize if opt.device.type == 'cuda' else (lambda: None)
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
    return {'epoch_s': epochs, 'slices': len(loader), 'peak_mb': _peak_memory_mb(cfg['device'])}


def bench_cache(args: argparse.Namespace) -> None:
    """pix2pix unet_256, MRNet --no_sam, MRNet without the SAM cache and MRNet reading the cache (built by its
    first epoch of round 1), each in a fresh process on the same slices, batch, loader, threads and generator
    width; ``--rounds`` times, in turn (the slow uncached MRNet only in round 1). A configuration's figure is its fastest epoch over all rounds (the
    building epoch is timed apart), so a burst of load from other jobs on a shared machine does not decide a
    ratio; each round's own ratio is printed too."""
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
            r = _in_subprocess('epoch', {**base, 'model': model, 'epochs': n + building, 'extra': extra})
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


def run_sam_config(cfg: dict) -> dict:
    """Images/s of one SAM image encoder configuration on random images (random weights: speed does not depend
    on them): segment_anything's own ImageEncoderViT, or ours (SDPA attention), in fp32 or with bf16/fp16
    weights, optionally torch.compile'd."""
    import torch
    from models.encoders.sam_attention import use_sdpa_attention
    from models.encoders.sam_encoder import SAM_ENCODERS, SAM_PRECISIONS, build_image_encoder
    device = torch.device(cfg['device'])
    dtype = SAM_PRECISIONS[cfg['precision']]
    encoder = build_image_encoder(SAM_ENCODERS[cfg['model_type']], cfg['size'])
    if cfg['ours']:
        use_sdpa_attention(encoder)
    encoder = encoder.to(device, dtype).eval().requires_grad_(False)
    if cfg['compile']:
        encoder = torch.compile(encoder)
    x = torch.randn(cfg['batch'], 3, cfg['size'], cfg['size'], device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    with torch.inference_mode():
        for _ in range(cfg['warmup']):
            encoder(x)
        sync()
        start = time.perf_counter()
        for _ in range(cfg['iters']):
            encoder(x)
        sync()
    seconds = time.perf_counter() - start
    return {'images_per_s': cfg['iters'] * cfg['batch'] / seconds, 'peak_mb': _peak_memory_mb(cfg['device'])}


def bench_sam(args: argparse.Namespace) -> None:
    """segment_anything's encoder against ours, same run, same input size, batch and precision."""
    size = 256 if args.quick else args.sam_size
    base = {'device': args.device, 'size': size, 'batch': args.sam_batch, 'model_type': args.sam_model_type,
            'warmup': 1 if args.quick else args.warmup, 'iters': 1 if args.quick else args.iters}
    print(f'device: {args.device}; SAM {args.sam_model_type} image encoder, input {size}, batch {args.sam_batch}',
          flush=True)
    configs = [('segment_anything', False, 'fp32', False), ('segment_anything', False, args.precision, False),
               ('ours (SDPA)', True, args.precision, False), ('ours (SDPA)', True, args.precision, True)]
    if args.compile_reference:
        configs.insert(2, ('segment_anything', False, args.precision, True))
    for label, ours, precision, compile_ in configs:
        if compile_ and args.no_compile:
            continue
        name = f'{label} {precision}{" + compile" if compile_ else ""}'
        r = _in_subprocess('sam', {**base, 'ours': ours, 'precision': precision, 'compile': compile_})
        if 'error' in r:
            print(f'{name:<42} failed: {r["error"]}', flush=True)
        else:
            print(f'{name:<42} {r["images_per_s"]:8.2f} images/s  peak {r["peak_mb"]:.0f} MB', flush=True)


RUNNERS = {'train': run_train_config, 'data': run_data_config, 'predict': run_predict_config, 'epoch': run_epoch_config,
           'sam': run_sam_config}
BENCHES = {'train': bench_train, 'data': bench_data, 'predict': bench_predict, 'cache': bench_cache, 'sam': bench_sam}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == '_one':
        cfg = json.loads(sys.argv[3])
        if cfg.get('code'):
            sys.path.insert(0, cfg['code'])     # import models/, data/, options/ from that tree
        print(json.dumps(RUNNERS[sys.argv[2]](cfg)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=sorted(BENCHES))
    parser.add_argument('--models', default='paper',
                        help=f'train: rows to measure, "paper" (the eight of Tables II-III and MRNet without the '
                             f'SAM cache) or some of {", ".join(TRAIN_ROWS)}')
    parser.add_argument('--amp_modes', default='',
                        help='train: precisions, e.g. off,bf16,bf16+compile (default on a GPU; the CPU: off)')
    parser.add_argument('--code', default='',
                        help='train: also run every configuration with the code tree DIR (e.g. a checkout of main), '
                             'in turn for --rounds rounds, and print the step-time ratio')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--iters', type=int, default=5, help='timed steps per configuration')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps before timing')
    parser.add_argument('--quick', action='store_true', help='one short run per configuration (smoke check)')
    parser.add_argument('--side', type=int, default=256, help='predict: side of the cubic test volume')
    parser.add_argument('--batch', type=int, default=None,
                        help='predict: slices per forward pass (16); cache, train: training batch size (4)')
    parser.add_argument('--skip_cpu', action='store_true', help='predict: only the GPU configuration')
    parser.add_argument('--slices', type=int, default=32, help='cache: training slices per epoch')
    parser.add_argument('--ngf', type=int, default=None,
                        help='cache: generator width of pix2pix and MRNet (16); train: of every row (default: each '
                             'model\'s own, 64)')
    parser.add_argument('--workers', type=int, default=0, help='cache: data loader workers')
    parser.add_argument('--threads', type=int, default=0,
                        help='cache, train: torch threads per process (0: torch\'s default)')
    parser.add_argument('--rounds', type=int, default=2,
                        help='cache: rounds of all configurations, taken in turn; train --code: --rounds x --iters '
                             'steps of each tree, in turn')
    parser.add_argument('--epochs', type=int, default=2,
                        help='cache: timed epochs per configuration and round (the uncached MRNet: 1)')
    parser.add_argument('--sam_size', type=int, default=None,
                        help='cache, sam, train: SAM input size (default: 1024, SAM\'s own and the paper\'s, for '
                             'train and sam; 256 for cache)')
    parser.add_argument('--sam_batch', type=int, default=8, help='cache: slices per SAM call when building; '
                        'sam: images per encoder call')
    parser.add_argument('--sam_model_type', default='vit_b', help='sam: vit_b, vit_l or vit_h')
    parser.add_argument('--precision', default='bf16', choices=['fp32', 'bf16', 'fp16'], help='sam: precision')
    parser.add_argument('--no_compile', action='store_true', help='sam: skip the torch.compile rows')
    parser.add_argument('--compile_reference', action='store_true',
                        help='sam: also torch.compile segment_anything\'s own encoder')
    args, extra = parser.parse_known_args()
    args.extra = extra  # passed on to the options parser, e.g. --ngf 32 --sam_checkpoint PATH
    if args.sam_size is None:
        args.sam_size = 1024 if args.what == 'train' else 256
    if args.ngf is None and args.what == 'cache':
        args.ngf = 16
    BENCHES[args.what](args)


if __name__ == '__main__':
    main()
