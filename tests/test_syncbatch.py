"""layers.SyncBatchNorm under a real 2-process gloo group on CPU behaves as BatchNorm2d on the
concatenated batch: outputs, input and parameter gradients, running statistics, eval outputs.

Each spawned rank writes its results to tmp_path; the parent compares them with a single-process
BatchNorm2d run over the whole batch. Ranks get unequal shares (3 and 2 samples), so the global
statistics must weight each process by its element count.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from models import layers

WORLD = 2
SHARES = (3, 2)              # samples per rank
MOMENTA = (0.3, None)        # exponential and cumulative running averages
PER_SAMPLE = ('out', 'x_grad', 'eval_out')  # results that are concatenated over ranks


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input x (5, 3, 4, 4) with a non-zero mean, and the weights w of the loss sum(w * out)."""
    g = torch.Generator().manual_seed(step)
    return torch.randn(5, 3, 4, 4, generator=g) * 2 + 1.5 - step, torch.randn(5, 3, 4, 4, generator=g)


def _rows(rank: int) -> slice:
    start = sum(SHARES[:rank])
    return slice(start, start + SHARES[rank])


def _layer(norm: type[nn.Module], momentum: float | None) -> nn.Module:
    layer = norm(3, momentum=momentum)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, 1.5, -2.0]))
        layer.bias.copy_(torch.tensor([0.1, -0.3, 0.7]))
    return layer


def _net(norm: type[nn.Module]) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), norm(4), nn.LeakyReLU(0.2), nn.Conv2d(4, 3, 1))


def _train_and_eval(model: nn.Module, bn: nn.Module, rows: slice, tag: str) -> dict[str, torch.Tensor]:
    """Two training steps on x[rows] with loss sum(w * out), then one eval pass; results keyed by tag."""
    res: dict[str, torch.Tensor] = {}
    for step in range(2):
        x, w = _batch(step)
        model.zero_grad()
        x = x[rows].clone().requires_grad_()
        out = model(x)
        (out * w[rows]).sum().backward()
        res[f'{tag}/out{step}'], res[f'{tag}/x_grad{step}'] = out.detach(), x.grad
    for name, p in model.named_parameters():
        res[f'{tag}/param_grad/{name.removeprefix("module.")}'] = p.grad.clone()
    res[f'{tag}/running_mean'], res[f'{tag}/running_var'] = bn.running_mean.clone(), bn.running_var.clone()
    res[f'{tag}/batches'] = bn.num_batches_tracked.clone()
    model.eval()
    with torch.no_grad():
        res[f'{tag}/eval_out'] = model(_batch(2)[0][rows])
    return res


def _run_all(norm: type[nn.Module], rows: slice,
             wrap: Callable[[nn.Module], nn.Module]) -> dict[str, torch.Tensor]:
    res: dict[str, torch.Tensor] = {}
    for momentum in MOMENTA:
        layer = _layer(norm, momentum)
        res.update(_train_and_eval(layer, layer, rows, f'layer_m{momentum}'))
    net = _net(norm)
    res.update(_train_and_eval(wrap(net), net[1], rows, 'net'))
    return res


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        res = _run_all(layers.SyncBatchNorm, _rows(rank), DistributedDataParallel)
        torch.save(res, Path(out_dir) / f'rank{rank}.pt')
        # one value per channel over both processes (rank 1 holds none) is refused on every rank
        with pytest.raises(ValueError, match='more than 1 value per channel .* got 1 over 2 processes'):
            layers.SyncBatchNorm(3)(torch.ones(1 - rank, 3, 1, 1))
    finally:
        dist.destroy_process_group()


def test_syncbatchnorm_over_two_gloo_processes_equals_full_batch_batchnorm(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / 'store'), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(WORLD)]
    full = _run_all(nn.BatchNorm2d, slice(None), lambda m: m)

    assert set(ranks[0]) == set(ranks[1]) == set(full)
    for key, expected in full.items():
        got = [r[key] for r in ranks]
        if any(f'/{name}' in key for name in PER_SAMPLE):     # each rank holds its own rows
            torch.testing.assert_close(torch.cat(got), expected, rtol=1e-5, atol=1e-5, msg=key)
        elif '/param_grad/' in key and key.startswith('net'):  # DDP averages the ranks' shares
            for g in got:
                torch.testing.assert_close(g * WORLD, expected, rtol=1e-5, atol=1e-5, msg=key)
        elif '/param_grad/' in key:                             # each rank holds its share
            torch.testing.assert_close(got[0] + got[1], expected, rtol=1e-5, atol=1e-5, msg=key)
        else:                                                   # running statistics: global
            for g in got:
                torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-6, msg=key)

    # the statistics really are global: rank 1's own batch statistics would give other outputs
    local = _layer(nn.BatchNorm2d, 0.3)(_batch(0)[0][_rows(1)]).detach()
    assert (ranks[1]['layer_m0.3/out0'] - local).abs().max() > 0.05


def test_torch_path_borrowed_for_accelerators_runs_on_this_class():
    """On CUDA/XPU/HPU the layer runs nn.SyncBatchNorm.forward; check it works on this class (here
    without a process group, where it is plain batch norm) and that bad input gives a clear error."""
    x = torch.randn(4, 3, 5) * 2 + 1
    layer, plain = layers.SyncBatchNorm(3, momentum=0.2), nn.BatchNorm1d(3, momentum=0.2)
    torch.testing.assert_close(nn.SyncBatchNorm.forward(layer, x), plain(x))
    torch.testing.assert_close(layer.running_var, plain.running_var)
    assert layer.num_batches_tracked.item() == 1
    with pytest.raises(ValueError, match='expected at least 2D input'):
        layer(torch.randn(3))
    with pytest.raises(ValueError, match='number of input channels should be non-zero'):
        nn.SyncBatchNorm.forward(layers.SyncBatchNorm(0), torch.randn(2, 0))
