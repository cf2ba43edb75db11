"""What a test.py run cost, written beside its metrics.csv as ``cost.json`` and read by compare.py:

    {"predict_seconds": 41.3, "items": 432, "volumes": 3, "peak_rss_mib": 1503.2, "peak_gpu_mib": null}

predict_seconds: the model's time over all test items (set_input, the forward passes with --tta and every
ensemble member, the GPU waited for), data loading, scoring and writing left out; items: slices, images or whole
volumes tested; volumes: volumes scored (0 for 2D images); peak memory in MiB (util/peak_memory.py: the process's
host resident set, and torch's GPU allocator on a GPU, null on a CPU), scoring included.
"""
from __future__ import annotations

import math
import os

import torch

from util.json_file import read_json, write_json
from util.peak_memory import peak_memory

COST_FILE = 'cost.json'


def write_test_cost(result_dir: str, predict_seconds: float, items: int, volumes: int,
                    device: torch.device) -> None:
    """``cost.json`` in ``result_dir`` (atomically), with this process's peak memory so far."""
    write_json(os.path.join(result_dir, COST_FILE), {'predict_seconds': predict_seconds, 'items': items,
                                                     'volumes': volumes, **peak_memory(device)})


def read_test_cost(result_dir: str) -> dict[str, float]:
    """The ``cost.json`` of a test result folder with 'seconds_per_volume' added (NaN without volumes); every value
    NaN when the folder has none (tested before test.py wrote it)."""
    path = os.path.join(result_dir, COST_FILE)
    cost = read_json(path) if os.path.isfile(path) else {}
    values = {k: math.nan if cost.get(k) is None else float(cost[k])
              for k in ('predict_seconds', 'items', 'volumes', 'peak_rss_mib', 'peak_gpu_mib')}
    values['seconds_per_volume'] = values['predict_seconds'] / values['volumes'] if values['volumes'] > 0 \
        else math.nan
    return values
