"""Reproducibility: one seed for python, numpy, torch and every data loader worker."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Seed python and numpy in a DataLoader worker from the torch seed the loader gave it.

    torch derives each worker's seed from the loader's generator, so this makes augmentation in
    every worker reproducible and different between workers.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    """The state of every generator, to store in a checkpoint."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain python types only, so the checkpoint loads with weights_only=True
    state = {'python': random.getstate(), 'numpy': (name, keys.tolist(), pos, has_gauss, gauss),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_as_python_state(state['python']))
    np.random.set_state(_as_numpy_state(state['numpy']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_python_state(s):
    """random.setstate wants tuples; a checkpoint round trip may give lists."""
    return (s[0], tuple(s[1]), s[2])


def _as_numpy_state(s):
    return (s[0], np.asarray(s[1], dtype=np.uint32), int(s[2]), int(s[3]), float(s[4]))
