"""Write a per-subject train/val/test split (8:1:1) for a triplanar_aligned dataset:

    python scripts/make_splits.py --dataroot DIR [--seed 2024] [--force]

writes ``DIR/splits/{train,val,test}.txt`` (one subject folder name per line). triplanar_aligned reads these
files for ``--phase train|val|test``; edit them freely, a subject must never be in two of them. Without
``--force`` an existing split is left alone.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.splits import SPLITS_DIR, list_subjects, read_splits, split_subjects, write_splits  # noqa: E402
from util.cli import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataroot', required=True, help='folder with one sub-folder per subject')
    p.add_argument('--seed', type=int, default=2024, help='seed of the random subject order')
    p.add_argument('--force', action='store_true', help='replace an existing split')
    args = p.parse_args(argv)
    existing = read_splits(args.dataroot)
    if existing and not args.force:
        raise ValueError(f'{os.path.join(args.dataroot, SPLITS_DIR)} already holds {", ".join(sorted(existing))}; '
                         f'pass --force to replace it')
    splits = split_subjects(list_subjects(args.dataroot), args.seed)
    if args.force:
        for phase in existing.keys() - splits.keys():
            os.remove(os.path.join(args.dataroot, SPLITS_DIR, f'{phase}.txt'))
    write_splits(args.dataroot, splits)
    for phase, names in splits.items():
        print(f'{phase}: {len(names)} subjects')
    return splits


if __name__ == '__main__':
    run_cli(main)
