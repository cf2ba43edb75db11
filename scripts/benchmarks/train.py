"""``benchmark.py train``: training steps of every model of the paper's Tables II and III (seconds per step,
slices/s, peak memory, TFLOP/s, the hours of the paper's protocol), or, with ``--code DIR``, the step-time ratio
of this code tree to another, stepping in turn (the CPU cost of a change)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from evaluation.comparison.plan import PAPER_MODELS
from scripts.benchmarks.timing import config_command, peak_memory_mb, run_config, synchronizer


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
    batch = {'A': torch.rand(n, opt.input_nc, size, size) * 2 - 1,
             'B': torch.rand(n, opt.output_nc, size, size) * 2 - 1, 'A_paths': ['x'] * n, 'B_paths': ['x'] * n}
    if cfg.get('cached'):
        encoder = model.unwrap('G').sam
        side = encoder.input_size // 16
        batch['sam_feature'] = torch.randn(n, encoder.out_channels, side, side).half()
        batch['sam_cached'] = torch.ones(n, dtype=torch.bool)
    if cuda:
        batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
    sync = synchronizer(cuda)
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
            'peak_mb': peak_memory_mb(cfg['device']), 'params_G': params, 'flops': flops,
            'device_name': torch.cuda.get_device_name() if cuda else 'CPU'}


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


def split_sam_flags(extra: list[str]) -> tuple[list[str], list[str]]:
    """Flags passed through to the options (``--sam_*`` ones, with their values, go to the MRNet rows only)."""
    sam, other, target = [], [], None
    for token in extra:
        if token.startswith('--'):
            target = sam if token.startswith('--sam_') else other
        (target if target is not None else other).append(token)
    return sam, other


def parse_modes(text: str) -> list[tuple[str, bool]]:
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
    modes = parse_modes(args.amp_modes or ('off,bf16,bf16+compile' if args.device.startswith('cuda') else 'off'))
    names = list(PAPER_MODELS) + ['mrnet_uncached'] if args.models == 'paper' else args.models.split(',')
    unknown = [n for n in names if n not in TRAIN_ROWS]
    if unknown:
        raise SystemExit(f'--models: unknown {", ".join(unknown)}; choose from paper, {", ".join(TRAIN_ROWS)}')
    base = {'device': args.device, 'size': 256, 'tmp': tmp, 'iters': iters, 'warmup': warmup, 'batch': args.batch or 4,
            'threads': args.threads}
    sam = ['--sam_input_size', str(args.sam_size)]
    shared = ['--ngf', str(args.ngf)] if args.ngf else []
    sam_extra, other_extra = split_sam_flags(args.extra)
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
            results[name, amp, compile_] = r = run_config('train', cfg)
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
            procs = [subprocess.Popen(config_command('train', {**cfg, 'code': c}),
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
