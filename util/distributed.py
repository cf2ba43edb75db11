"""Devices and processes: one GPU, the CPU, or several processes under torchrun (DDP)."""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist


def setup(opt: argparse.Namespace) -> None:
    """Fill ``opt.device``, ``opt.rank``, ``opt.world_size``, ``opt.distributed``.

    Under torchrun (WORLD_SIZE > 1) the process group is initialised: NCCL with one GPU per process
    (LOCAL_RANK picks it) when GPUs are asked for and present, gloo on the CPU otherwise.
    Without torchrun, ``--gpu_ids 0`` uses the first listed GPU and ``--gpu_ids -1`` the CPU.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    use_cuda = bool(opt.gpu_ids) and torch.cuda.is_available()
    if opt.gpu_ids and not torch.cuda.is_available():
        print(f'--gpu_ids {",".join(map(str, opt.gpu_ids))} asked for a GPU but none is available: using the CPU')
        opt.gpu_ids = []
    opt.distributed = world_size > 1
    opt.world_size = world_size
    opt.rank = int(os.environ.get('RANK', '0'))
    if opt.distributed:
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            opt.device = torch.device('cuda', local_rank)
            opt.gpu_ids = [local_rank]
        else:
            opt.device = torch.device('cpu')
        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    else:
        opt.device = torch.device('cuda', opt.gpu_ids[0]) if use_cuda else torch.device('cpu')
        if use_cuda:
            torch.cuda.set_device(opt.gpu_ids[0])


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and pages."""
    return not dist.is_initialized() or dist.get_rank() == 0


def average_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over all processes (identity without a process group); for logging losses."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not values:
        return dict(values)
    t = torch.tensor(list(values.values()), dtype=torch.float64,
                     device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(values.keys(), t.tolist()))


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (itself without a process group), e.g. rank 0's decision to stop."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
