"""What a comparison row costs at test time: the A -> B generator's parameters and its time per slice (for a 3D
row, its sliding-window pass over a test volume divided by the slices a slice row translates for that volume, so the
column reads the same: time per volume = time per slice x slices)."""
from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch

from inference.test_time import EnsembleModel, create_test_model, run_test
from inference.volume_model import SlidingWindowModel, check_checkpoint_kind


def measure_generator(opt: argparse.Namespace, names: list[str], n_slices: int) -> dict:
    """Parameters of the A -> B generator as loaded for testing (G, or G_A of a CycleGAN; total and frozen, summed
    over ensemble members), and the time per slice of the whole test-time path (batch 1, after two warm-up passes,
    SAM run on the slice as for a new patient, flip TTA and every ensemble member included) on the test device.
    ``opt``: test.py's parsed options of the run; ``names``: its experiments (one, or an ensemble's members)."""
    if check_checkpoint_kind(opt, names):
        return measure_volume_generator(opt, names, max(1, n_slices // 20))
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


def measure_volume_generator(opt: argparse.Namespace, names: list[str], rounds: int) -> dict:
    """:func:`measure_generator` for 3D checkpoints: parameters, and the time of the whole sliding-window pass (flip
    TTA and ensemble members included) over a random volume of the first test subject's shape on the training grid,
    after one warm-up pass, per slice of that volume in the tested planes (x, y and z: X + Y + Z slices)."""
    from data import create_dataset
    with contextlib.redirect_stdout(io.StringIO()):
        model = SlidingWindowModel(opt, names)
        dataset = create_dataset(opt).dataset
    shape = dataset.volumes(next(iter(dataset.subjects))).shape[:3]
    params = [p for m in model.members for p in m.net.parameters()]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, opt.input_nc, *shape, generator=gen) * 2 - 1
    model.set_input({'A': x, 'A_paths': ['timing']})
    model.test()
    start = time.perf_counter()
    for _ in range(rounds):
        model.test()
    seconds = (time.perf_counter() - start) / rounds
    device = str(opt.device) + (f' ({torch.cuda.get_device_name(opt.device)})' if opt.device.type == 'cuda' else '')
    return {'generator': 'G', 'params_total': sum(p.numel() for p in params),
            'params_frozen': sum(p.numel() for p in params if not p.requires_grad),
            'inference_ms': seconds * 1000 / sum(shape), 'volume_ms': seconds * 1000, 'device': device}
