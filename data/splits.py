"""Per-subject splits of a folder of subjects: ``<dataroot>/splits/{train,val,test}.txt`` (8:1:1, seeded, written on
first use or by scripts/make_splits.py), ``--split all``, and the folds of the non-test subjects (``--n_folds``).

Splits are by subject, never by slice, so no subject's slices reach two phases.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from data.layouts import LAYOUT_EXAMPLES
from util.checkpoint import atomic_write
from util.disk import WriteError

SPLITS_DIR = 'splits'
ALL_SPLIT = 'all'                   # --split all: every subject of the folder
SPLIT_RATIOS = {'train': 8, 'val': 1, 'test': 1}


def list_subjects(root: str) -> list[str]:
    """Sorted subject folder names under ``root`` (hidden folders and ``splits/`` left out)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'--dataroot {root}: folder not found')
    names = sorted(e for e in os.listdir(root)
                   if not e.startswith('.') and e != SPLITS_DIR and os.path.isdir(os.path.join(root, e)))
    if not names:
        raise FileNotFoundError(f'{root}: no subject folders found; expected one folder per subject, e.g. '
                                f'{LAYOUT_EXAMPLES}')
    return names


# ----------------------------------------------------------------------------- splits

def split_subjects(subjects: list[str], seed: int) -> dict[str, list[str]]:
    """A deterministic 8:1:1 train/val/test split of subject names (val and test get at least one subject each
    when there are 3 or more)."""
    order = sorted(subjects)
    n = len(order)
    total = sum(SPLIT_RATIOS.values())
    n_val = max(1, round(n * SPLIT_RATIOS['val'] / total)) if n >= 3 else 0
    n_test = max(1, round(n * SPLIT_RATIOS['test'] / total)) if n >= 3 else 0
    perm = np.random.default_rng(seed).permutation(n)
    parts = {'test': perm[:n_test], 'val': perm[n_test:n_test + n_val], 'train': perm[n_test + n_val:]}
    return {phase: sorted(order[i] for i in idx) for phase, idx in parts.items()}


def write_splits(root: str, splits: dict[str, list[str]]) -> None:
    """``<root>/splits/<phase>.txt``, one subject per line (each file written atomically)."""
    folder = os.path.join(root, SPLITS_DIR)
    for phase, names in splits.items():
        atomic_write(lambda f, text=''.join(f'{n}\n' for n in names): f.write(text),
                     os.path.join(folder, f'{phase}.txt'), binary=False)


def read_splits(root: str) -> dict[str, list[str]]:
    """Every ``<root>/splits/<phase>.txt`` (blank lines and ``#`` comments ignored)."""
    folder = os.path.join(root, SPLITS_DIR)
    if not os.path.isdir(folder):
        return {}
    out = {}
    for file in sorted(f for f in os.listdir(folder) if f.endswith('.txt') and not f.startswith('.')):
        with open(os.path.join(folder, file)) as f:
            out[file[:-4]] = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith('#')]
    return out


def load_split(root: str, phase: str, subjects: list[str], seed: int, fallback: str | None = None) -> list[str]:
    """The subjects of ``phase``: every subject for ``all``; else read from ``splits/<phase>.txt``, or, when there
    are no split files at all, a new 8:1:1 split (seed ``seed``) written there first. When ``root`` cannot be
    written (read-only storage) the new split goes to ``<fallback>/splits/`` (the experiment folder), where later
    runs find it. Checks that no subject is in two splits and that every listed subject has a folder."""
    if phase == ALL_SPLIT:
        return sorted(subjects)
    splits = read_splits(root)
    folder = os.path.join(root, SPLITS_DIR)
    if not splits and fallback and read_splits(fallback):
        splits, folder = read_splits(fallback), os.path.join(fallback, SPLITS_DIR)
        print(f'using the subject split kept in {folder} (none under {root})')
    if not splits:
        splits = split_subjects(subjects, seed)
        ratios = ":".join(map(str, SPLIT_RATIOS.values()))
        try:
            write_splits(root, splits)
            print(f'wrote a new {ratios} subject split (seed {seed}) to {folder}')
        except (OSError, WriteError) as e:
            if not fallback:
                print(f'WARNING: could not write the subject split to {folder} ({e}); using it unsaved',
                      file=sys.stderr)
            else:
                write_splits(fallback, splits)
                folder = os.path.join(fallback, SPLITS_DIR)
                print(f'WARNING: {root} cannot be written ({e}): wrote the new {ratios} subject split (seed {seed}) '
                      f'to the experiment folder {folder} instead; later runs of this experiment use it',
                      file=sys.stderr)
    if phase not in splits:
        raise FileNotFoundError(f'{os.path.join(folder, phase + ".txt")} not found (--phase {phase}); the split '
                                f'folder has {", ".join(sorted(splits))}. Write it, remove {folder} to make a '
                                f'new split, or pass --split {ALL_SPLIT} to use every subject')
    seen: dict[str, str] = {}
    for name, members in splits.items():
        for s in members:
            if s in seen and seen[s] != name:
                raise ValueError(f'subject {s} is in two splits: {folder}/{seen[s]}.txt and {folder}/{name}.txt')
            seen[s] = name
    known = set(subjects)
    missing = [s for s in splits[phase] if s not in known]
    if missing:
        raise FileNotFoundError(f'{folder}/{phase}.txt lists subjects with no folder under {root}: '
                                f'{", ".join(missing[:10])}')
    if not splits[phase]:
        raise ValueError(f'{folder}/{phase}.txt is empty: no subjects for --phase {phase} (--split {ALL_SPLIT} '
                         f'uses every subject of {root})')
    return splits[phase]


def fold_split(subjects: list[str], n_folds: int, fold: int, seed: int) -> dict[str, list[str]]:
    """Fold ``fold`` of ``n_folds`` per-subject folds of ``subjects`` (the non-test subjects): {'val': that fold,
    'train': the others}, each sorted; the folds are a seeded permutation cut into near-equal parts, so together
    they cover every subject once. ValueError for a fold index out of range or more folds than subjects."""
    if n_folds < 2:
        raise ValueError(f'--n_folds {n_folds}: use 2 or more folds (0 for no folds)')
    if not 0 <= fold < n_folds:
        raise ValueError(f'--fold {fold} is out of range for --n_folds {n_folds}: use 0..{n_folds - 1}')
    if n_folds > len(subjects):
        raise ValueError(f'--n_folds {n_folds}: only {len(subjects)} non-test subjects to fold')
    order = sorted(subjects)
    perm = np.random.default_rng([seed, n_folds]).permutation(len(order))
    parts = np.array_split(perm, n_folds)
    return {'val': sorted(order[i] for i in parts[fold]),
            'train': sorted(order[i] for k, part in enumerate(parts) if k != fold for i in part)}
