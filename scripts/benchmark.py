"""Speed and memory benchmarks (not tests: these machines are noisy, so compare ratios taken in one run).

    python scripts/benchmark.py train --model pix2pix            # it/s at batch 1 and 4, 256x256, peak memory
    python scripts/benchmark.py train --model pix2pix --netG transunet,swin_unet,resvit,tcgan,ppt
                                                                 # each generator at batch 4 vs unet_256
    python scripts/benchmark.py train --model mrnet              # MRNet step vs pix2pix unet_256, SAM 256/1024,
                                                                 # frozen and fine-tuned
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


def _peak_memory_mb(device: str) -> float:
    import torch
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_train_config(cfg: dict) -> dict:
    """Time ``cfg['iters']`` training steps of one model configuration on random 256x256 data."""
    import torch
    from models import create_model
    from options.train_options import TrainOptions
    gpu = '0' if cfg['device'].startswith('cuda') else '-1'
    args = ['--model', cfg['model'], '--gpu_ids', gpu, '--batch_size', str(cfg['batch']), '--display_id', '0',
            '--checkpoints_dir', cfg['tmp'], '--name', 'bench', '--crop_size', str(cfg['size'])] + cfg['extra']
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        opt = TrainOptions().parse(args)
        model = create_model(opt)
        model.setup(opt)
    nc_in, nc_out = opt.input_nc, opt.output_nc
    batch = {'A': torch.rand(cfg['batch'], nc_in, cfg['size'], cfg['size']) * 2 - 1,
             'B': torch.rand(cfg['batch'], nc_out, cfg['size'], cfg['size']) * 2 - 1,
             'A_paths': ['x'] * cfg['batch'], 'B_paths': ['x'] * cfg['batch']}

    def step():
        model.set_input(batch)
        model.optimize_parameters()
        if opt.device.type == 'cuda':
            torch.cuda.synchronize()
    for _ in range(cfg['warmup']):
        step()
    start = time.perf_counter()
    for _ in range(cfg['iters']):
        step()
    seconds = (time.perf_counter() - start) / cfg['iters']
    params = sum(p.numel() for name in model.model_names if name.startswith('G')
                 for p in model.unwrap(name).parameters())
    return {'step_s': seconds, 'it_per_s': 1 / seconds, 'peak_mb': _peak_memory_mb(cfg['device']),
            'params_G': params}


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
    code path (models.prediction), after saving and reloading an untrained generator of ``cfg['extra']`` options;
    model loading and the first batch (warm-up) are excluded by timing a second run."""
    import contextlib
    import io
    import numpy as np
    import torch
    from models import create_model
    from options.train_options import TrainOptions
    from util.image_io import reference_image
    from models.prediction import load_generator, predict_volume
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


def _print_train_row(name: str, r: dict, ref: dict | None = None) -> None:
    if 'error' in r:
        print(f'{name:<45} failed: {r["error"]}', flush=True)
        return
    ratio = f'  x{r["step_s"] / ref["step_s"]:.2f} of pix2pix' if ref and 'step_s' in ref else ''
    print(f'{name:<45} {r["step_s"]:8.3f} s/step {r["it_per_s"]:8.3f} it/s  peak {r["peak_mb"]:8.0f} MB  '
          f'G params {r["params_G"] / 1e6:.2f} M{ratio}', flush=True)


def bench_train(args: argparse.Namespace) -> None:
    import tempfile
    tmp = tempfile.mkdtemp(prefix='bench_')
    iters, warmup = (1, 1) if args.quick else (args.iters, args.warmup)
    base = {'device': args.device, 'size': 256, 'tmp': tmp, 'iters': iters, 'warmup': warmup}
    print(f'device: {args.device}, torch threads: {os.environ.get("OMP_NUM_THREADS", "default")}', flush=True)
    if args.model == 'pix2pix' and args.netG:
        ref = _in_subprocess('train', {**base, 'model': 'pix2pix', 'batch': 4, 'extra': args.extra})
        _print_train_row('pix2pix unet_256 batch 4 (reference)', ref)
        for name in args.netG:
            res = _in_subprocess('train', {**base, 'model': 'pix2pix', 'batch': 4,
                                           'extra': ['--netG', name] + args.extra})
            _print_train_row(f'pix2pix {name} batch 4', res, ref)
        return
    if args.model == 'pix2pix':
        for b in (1, 4):
            _print_train_row(f'pix2pix unet_256 batch {b}',
                             _in_subprocess('train', {**base, 'model': 'pix2pix', 'batch': b, 'extra': []}))
        return
    ref = _in_subprocess('train', {**base, 'model': 'pix2pix', 'batch': 4, 'extra': []})
    _print_train_row('pix2pix unet_256 batch 4 (reference)', ref)
    for size in ((256,) if args.quick else args.sam_sizes):
        for finetune in (False, True):
            extra = ['--sam_input_size', str(size)] + (['--sam_finetune'] if finetune else [])
            res = _in_subprocess('train', {**base, 'model': args.model, 'batch': 4, 'extra': extra + args.extra})
            _print_train_row(f'{args.model} batch 4 SAM {size} {"fine-tuned" if finetune else "frozen"}', res, ref)


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
        model.optimize_parameters()
    epochs = []
    for epoch in range(1, cfg['epochs'] + 1):
        sync()
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            model.prepare_data(loader)
        loader.set_epoch(epoch)
        for data in loader:
            model.set_input(data)
            model.optimize_parameters()
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
    from models.sam_attention import use_sdpa_attention
    from models.sam_encoder import SAM_ENCODERS, SAM_PRECISIONS, build_image_encoder
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
        print(json.dumps(RUNNERS[sys.argv[2]](json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=sorted(BENCHES))
    parser.add_argument('--model', default='pix2pix', help='pix2pix, or mrnet (compared with pix2pix)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--netG', type=lambda v: [x for x in v.split(',') if x], default=[],
                        help='pix2pix generators to compare with unet_256 at batch 4, e.g. transunet,swin_unet')
    parser.add_argument('--iters', type=int, default=5, help='timed steps per configuration')
    parser.add_argument('--sam_sizes', type=lambda v: [int(x) for x in v.split(',')], default=[256, 1024],
                        help='SAM input sizes to measure (mrnet), e.g. 256,1024')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps before timing')
    parser.add_argument('--quick', action='store_true', help='one short run per configuration (smoke check)')
    parser.add_argument('--side', type=int, default=256, help='predict: side of the cubic test volume')
    parser.add_argument('--batch', type=int, default=None,
                        help='predict: slices per forward pass (16); cache: training batch size (4)')
    parser.add_argument('--skip_cpu', action='store_true', help='predict: only the GPU configuration')
    parser.add_argument('--slices', type=int, default=32, help='cache: training slices per epoch')
    parser.add_argument('--ngf', type=int, default=16, help='cache: generator width of pix2pix and MRNet')
    parser.add_argument('--workers', type=int, default=0, help='cache: data loader workers')
    parser.add_argument('--threads', type=int, default=0, help='cache: torch threads per process (0: torch\'s default)')
    parser.add_argument('--rounds', type=int, default=2, help='cache: rounds of all configurations, taken in turn')
    parser.add_argument('--epochs', type=int, default=2,
                        help='cache: timed epochs per configuration and round (the uncached MRNet: 1)')
    parser.add_argument('--sam_size', type=int, default=256, help='cache, sam: SAM input size (sam: 1024 is SAM\'s own)')
    parser.add_argument('--sam_batch', type=int, default=8, help='cache: slices per SAM call when building; '
                        'sam: images per encoder call')
    parser.add_argument('--sam_model_type', default='vit_b', help='sam: vit_b, vit_l or vit_h')
    parser.add_argument('--precision', default='bf16', choices=['fp32', 'bf16', 'fp16'], help='sam: precision')
    parser.add_argument('--no_compile', action='store_true', help='sam: skip the torch.compile rows')
    parser.add_argument('--compile_reference', action='store_true',
                        help='sam: also torch.compile segment_anything\'s own encoder')
    args, extra = parser.parse_known_args()
    args.extra = extra  # passed on to the options parser, e.g. --ngf 32 --sam_checkpoint PATH
    BENCHES[args.what](args)


if __name__ == '__main__':
    main()
