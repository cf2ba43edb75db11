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

from data.demo_data import DEFAULT_SIZES, MAKERS, SHAPE, SPACING_ANISO, SPACING_ISO  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='datasets', help='parent folder of demo_synthrad/ and demo_brats/')
    p.add_argument('--n_synthrad', type=int, default=DEFAULT_SIZES['synthrad'])
    p.add_argument('--n_brats', type=int, default=DEFAULT_SIZES['brats'])
    p.add_argument('--seed', type=int, default=2024)
    p.add_argument('--shape', type=int, nargs=3, default=None, metavar=('X', 'Y', 'Z'),
                   help='SynthRAD set: voxels per head (default 48 56 40)')
    p.add_argument('--spacing', type=float, nargs=3, default=None, metavar=('X', 'Y', 'Z'),
                   help='SynthRAD set: voxel size in mm of the isotropic subjects (default 4 4 4)')
    p.add_argument('--aniso_spacing', type=float, nargs=3, default=None, metavar=('X', 'Y', 'Z'),
                   help='SynthRAD set: voxel size of every second pair of subjects (default 4 4 5)')
    args = p.parse_args(argv)
    for kind, n in (('synthrad', args.n_synthrad), ('brats', args.n_brats)):
        if n <= 0:
            continue
        root = os.path.join(args.out, f'demo_{kind}')
        if kind == 'synthrad' and (args.shape or args.spacing or args.aniso_spacing):
            MAKERS[kind](root, n, args.seed, tuple(args.shape or SHAPE),
                         (tuple(args.spacing or SPACING_ISO), tuple(args.aniso_spacing or SPACING_ANISO)))
        else:
            MAKERS[kind](root, n, args.seed)
        print(f'{root}: {n} subjects')


if __name__ == '__main__':
    sys.exit(main())
