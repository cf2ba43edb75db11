"""Floating-point operations of one call, counted by torch's ``FlopCounterMode`` (matrix products and
convolutions, forward and backward, which dominate a training step; element-wise operations are not counted)."""
from __future__ import annotations

from collections.abc import Callable


def count_flops(step: Callable[[], object]) -> float:
    """Runs ``step()`` once, as it would run anyway (same results, same random numbers), and returns the FLOPs it
    performed."""
    from torch.utils.flop_counter import FlopCounterMode     # here: importing it costs every train.py 0.2 s
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())
