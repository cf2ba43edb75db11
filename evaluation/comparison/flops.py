"""What a comparison row's training computes: floating-point operations of one training step, counted once with
torch's ``FlopCounterMode`` (forward and backward of every network the step runs, discriminators and a SAM
encoder run on the fly included; matrix products and convolutions, which dominate), and the run's total from the
images it trained on. Rows that learn from different units (a 3D patch, a slice) are compared by time and by FLOPs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os

from util.checkpoint import safe_load
from util.flop_count import count_flops


def training_step_flops(opt: argparse.Namespace) -> float:
    """FLOPs of one training step (``optimize_parameters`` on the first batch of the training set, ``--batch_size``
    items) of the model of train.py's parsed options ``opt``, on the CPU. The step changes nothing on disk."""
    from data import create_dataset
    from models import create_model
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = create_dataset(opt)
        model = create_model(opt)
        model.setup(opt)
        model.prepare_data(dataset)
        dataset.set_epoch(1, 0)
        batch = next(iter(dataset))
    model.set_input(batch)
    return count_flops(model.optimize_parameters)


def trained_images(checkpoint_dir: str) -> int:
    """Images (slices or patches) a run trained on: its latest state's ``total_iters``; 0 without one."""
    path = os.path.join(checkpoint_dir, 'latest_state.pth')
    return int(safe_load(path)['counters'].get('total_iters', 0)) if os.path.isfile(path) else 0
