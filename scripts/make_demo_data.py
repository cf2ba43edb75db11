"""Write the demo datasets (data/demo_data.py) to a folder of your choice:

    python scripts/make_demo_data.py [--out datasets] [--n_synthrad 8] [--n_brats 4] [--seed 2024]

writes ``<out>/demo_synthrad/<subject>/{mr,ct,mask}.nii.gz`` (SynthRAD2023 Task 1 layout) and
``<out>/demo_brats/<subject>/<subject>_{flair,t2,seg}.nii[.gz]`` (BraTS layout). Training without --dataroot
makes ``datasets/demo_synthrad`` on first use, so this is only needed for other sizes, seeds or places.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.demo_data import DEFAULT_SIZES, MAKERS  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='datasets', help='parent folder of demo_synthrad/ and demo_brats/')
    p.add_argument('--n_synthrad', type=int, default=DEFAULT_SIZES['synthrad'])
    p.add_argument('--n_brats', type=int, default=DEFAULT_SIZES['brats'])
    p.add_argument('--seed', type=int, default=2024)
    args = p.parse_args(argv)
    for kind, n in (('synthrad', args.n_synthrad), ('brats', args.n_brats)):
        root = os.path.join(args.out, f'demo_{kind}')
        MAKERS[kind](root, n, args.seed)
        print(f'{root}: {n} subjects')


if __name__ == '__main__':
    sys.exit(main())
