"""Shared fixtures: tiny image datasets in the classic layouts, and a way to run the entry points."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random grayscale image (H, W) in [0, 255] with some structure to learn."""
    y, x = np.mgrid[0:size, 0:size] / size
    f = rng.uniform(1, 4, size=2)
    img = 127.5 + 100 * np.sin(2 * np.pi * f[0] * x) * np.cos(2 * np.pi * f[1] * y) + rng.normal(0, 5, (size, size))
    return np.clip(img, 0, 255)


@pytest.fixture
def aligned_root(tmp_path: Path) -> Path:
    """DIR/train and DIR/test with A|B side-by-side RGB PNGs of 256x256 halves (1 train, 2 test)."""
    rng = np.random.default_rng(0)
    for phase, n in (('train', 1), ('test', 2)):
        (tmp_path / phase).mkdir()
        for i in range(n):
            a = _pattern(rng, 256)
            b = 255 - a
            ab = np.concatenate([a, b], axis=1).astype(np.uint8)
            Image.fromarray(np.stack([ab] * 3, -1)).save(tmp_path / phase / f'{i}.png')
    return tmp_path


@pytest.fixture
def unaligned_root(tmp_path: Path) -> Path:
    """DIR/trainA, trainB (one 256x256 RGB PNG each), testA, testB (two each)."""
    rng = np.random.default_rng(1)
    for sub in ('trainA', 'trainB', 'testA', 'testB'):
        (tmp_path / sub).mkdir()
        for i in range(1 if sub.startswith('train') else 2):
            img = _pattern(rng, 256).astype(np.uint8)
            Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / sub / f'{sub}_{i}.png')
    return tmp_path


def run_script(*args: str, cwd: Path, timeout: float = 600, env_extra: dict | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python <args>`` from ``cwd`` with the repository on the path; returns the finished process."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '2', **(env_extra or {})}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc
