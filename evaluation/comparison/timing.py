"""What a comparison row costs at test time: the A -> B generator's parameters and its time per slice."""
from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch

from inference.test_time import EnsembleModel, create_test_model, run_test


def measure_generator(opt: argparse.Namespace, names: list[str], n_slices: int) -> dict:
    """Parameters of the A -> B generator as loaded for testing (G, or G_A of a CycleGAN; total and frozen, summed
    over ensemble members), and the time per slice of the whole test-time path (batch 1, after two warm-up passes,
    SAM run on the slice as for a new patient, flip TTA and every ensemble member included) on the test device.
    ``opt``: test.py's parsed options of the run; ``names``: its experiments (one, or an ensemble's members)."""
    with contextlib.redirect_stdout(io.StringIO()):
        model = create_test_model(opt, names)
    members = model.members if isinstance(model, EnsembleModel) else [model]
    if opt.eval:
        model.eval()
    name = 'G_A' if 'G_A' in members[0].model_names else members[0].model_names[0]
    params = [p for m in members for p in m.unwrap(name).parameters()]
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, opt.input_nc, opt.crop_size, opt.crop_size, generator=gen) * 2 - 1).to(opt.device)
    y = (torch.rand(1, opt.output_nc, opt.crop_size, opt.crop_size, generator=gen) * 2 - 1).to(opt.device)
    batch = {'A': x, 'B': y, 'A_paths': ['timing'], 'B_paths': ['timing']}

    def sync() -> None:
        if opt.device.type == 'cuda':
            torch.cuda.synchronize(opt.device)

    def one() -> None:
        model.set_input(batch)
        run_test(model)
    for _ in range(2):
        one()
    sync()
    start = time.perf_counter()
    for _ in range(max(1, n_slices)):
        one()
    sync()
    seconds = (time.perf_counter() - start) / max(1, n_slices)
    device = str(opt.device) + (f' ({torch.cuda.get_device_name(opt.device)})' if opt.device.type == 'cuda' else '')
    return {'generator': name, 'params_total': sum(p.numel() for p in params),
            'params_frozen': sum(p.numel() for p in params if not p.requires_grad),
            'inference_ms': seconds * 1000, 'device': device}
