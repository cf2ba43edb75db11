"""What the benchmarks share: running one configuration in a fresh process (so that its peak memory is its own),
peak memory, and waiting for the GPU before reading a clock."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmark.py')


def config_command(kind: str, cfg: dict) -> list[str]:
    """The command running configuration ``cfg`` of the runner ``kind`` (scripts/benchmark.py's RUNNERS) in a fresh
    process; its last line of output is the result as JSON."""
    return [sys.executable, SCRIPT, '_one', kind, json.dumps(cfg)]


def run_config(kind: str, cfg: dict) -> dict:
    """Run one configuration in a fresh process; a failure (e.g. killed for memory) is returned as {'error': ...}."""
    out = subprocess.run(config_command(kind, cfg), capture_output=True, text=True)
    if out.returncode != 0:
        why = 'killed (out of memory?)' if out.returncode < 0 else (out.stderr.strip().splitlines() or ['?'])[-1]
        return {'error': f'exit {out.returncode}: {why}'}
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process in MB: allocated on the GPU (``cuda``), else resident (CPU)."""
    import torch
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_rss_mb() -> float:
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


def synchronizer(on_gpu: bool) -> Callable[[], None]:
    """What to call before reading a clock: torch.cuda.synchronize on a GPU (its work is asynchronous), else nothing."""
    import torch
    return torch.cuda.synchronize if on_gpu else (lambda: None)
