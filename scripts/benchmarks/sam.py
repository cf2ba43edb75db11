"""``benchmark.py sam``: images per second of segment_anything's SAM image encoder and of ours (SDPA attention),
in one run, at the same input size, batch and precision, with and without torch.compile."""
from __future__ import annotations

import argparse
import time

from scripts.benchmarks.timing import peak_memory_mb, run_config, synchronizer


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
    sync = synchronizer(device.type == 'cuda')
    with torch.inference_mode():
        for _ in range(cfg['warmup']):
            encoder(x)
        sync()
        start = time.perf_counter()
        for _ in range(cfg['iters']):
            encoder(x)
        sync()
    seconds = time.perf_counter() - start
    return {'images_per_s': cfg['iters'] * cfg['batch'] / seconds, 'peak_mb': peak_memory_mb(cfg['device'])}


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
        r = run_config('sam', {**base, 'ours': ours, 'precision': precision, 'compile': compile_})
        if 'error' in r:
            print(f'{name:<42} failed: {r["error"]}', flush=True)
        else:
            print(f'{name:<42} {r["images_per_s"]:8.2f} images/s  peak {r["peak_mb"]:.0f} MB', flush=True)
