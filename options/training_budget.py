"""Training for a fixed wall-clock time (``--time_budget_min``): compare.py gives every row the same budget, so rows
that learn from different units (a 3D patch is not a slice) are compared at equal training time.

The budget counts the wall-clock time of the epochs' loops over the data (loading, steps, the checkpoints saved
within), summed over resumed sessions through the ``train_seconds`` counter of the latest state; not what a run
prepares once and every row shares (the slice store, the SAM feature cache), nor validation. When it is spent the
loop stops before its next step, saves the latest state and networks (``latest_net_G.pth``, marked
``budget_spent``) and training ends; a resumed run with a larger budget goes on.
"""
from __future__ import annotations

import argparse
import os
import time

from util import distributed
from util.checkpoint import safe_load


def add_budget_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument('--time_budget_min', type=float, default=0.0,
                        help='stop training when the training loop has run this many minutes (resumed sessions '
                             'included), saving the latest checkpoint; 0 (default): no budget, train all epochs. '
                             'compare.py gives every row the same budget: equal training time')
    return parser


class TrainingBudget:
    """The budget of one training session: ``minutes`` (0: none) minus the ``earlier`` seconds of resumed sessions."""

    def __init__(self, minutes: float, earlier: float = 0.0):
        if minutes < 0:
            raise ValueError(f'--time_budget_min {minutes:g}: must be 0 (no budget) or more')
        self.minutes, self.earlier, self.start, self.stopped = minutes, float(earlier), None, False

    def run(self) -> None:
        """The clock runs (an epoch's loop over the data begins)."""
        self.start = time.time()

    def pause(self) -> None:
        """The clock stops (the loop ended) until :meth:`run`."""
        self.earlier, self.start = self.seconds(), None

    def seconds(self) -> float:
        """Training seconds so far, earlier sessions included."""
        return self.earlier + (time.time() - self.start if self.start is not None else 0.0)

    def spent(self) -> bool:
        """Whether the budget is spent (rank 0 decides for every process); then :attr:`stopped` stays True."""
        if self.minutes > 0 and not self.stopped:
            self.stopped = distributed.broadcast_flag(self.seconds() >= self.minutes * 60)
        return self.stopped

    def counters(self, epoch: int, epoch_iter: int, total_iters: int) -> dict:
        """The latest state's counters when the budget stopped the loop in ``epoch`` after ``epoch_iter`` images."""
        return {'epoch': epoch, 'epoch_iter': epoch_iter, 'total_iters': total_iters, 'train_seconds': self.seconds(),
                'budget_spent': True}

    def describe(self, total_iters: int) -> str:
        return (f'--time_budget_min {self.minutes:g}: budget spent after {self.seconds() / 60:.2f} min of training '
                f'({total_iters} images); the latest checkpoint holds the networks')


def budget_spent(checkpoint_dir: str, minutes: float) -> bool:
    """Whether the run in ``checkpoint_dir`` stopped at a time budget of ``minutes`` or more (compare.py reuses it;
    a larger budget resumes it)."""
    path = os.path.join(checkpoint_dir, 'latest_state.pth')
    if minutes <= 0 or not os.path.isfile(path):
        return False
    counters = safe_load(path)['counters']
    return bool(counters.get('budget_spent')) and counters.get('train_seconds', 0.0) >= minutes * 60
