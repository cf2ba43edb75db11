"""The peak memory of this process, as train.py and test.py record it (loss_log.jsonl's ``end`` record,
``cost.json`` beside the test results) and compare.py reports it: host memory (resident set, all threads) and,
on a GPU, what torch's caching allocator handed out."""
from __future__ import annotations

import resource
import sys

import torch

MIB = 2 ** 20


def peak_rss_mib() -> float:
    """The largest resident set size this process has had so far, MiB (``getrusage``'s ``ru_maxrss``: KiB on
    Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == 'darwin' else peak / 1024


def peak_memory(device: torch.device | None = None) -> dict[str, float | None]:
    """{'peak_rss_mib': host peak (MiB), 'peak_gpu_mib': ``torch.cuda.max_memory_allocated(device)`` (MiB) on a
    CUDA ``device``, else None}."""
    on_gpu = device is not None and device.type == 'cuda'
    return {'peak_rss_mib': peak_rss_mib(),
            'peak_gpu_mib': torch.cuda.max_memory_allocated(device) / MIB if on_gpu else None}
