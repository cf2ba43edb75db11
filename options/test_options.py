"""Test options: where results go and how many inputs to run."""
import argparse

from inference.body_composite import add_outside_body_option
from inference.sliding_window import DEFAULT_OVERLAP
from models.amp import SPEED_DEFAULTS
from .dose_options import add_dose_arguments
from .base_options import BaseOptions


class TestOptions(BaseOptions):
    is_train = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = BaseOptions.initialize(self, parser)
        parser.add_argument('--results_dir', type=str, default='./results/', help='saves results here.')
        parser.add_argument('--aspect_ratio', type=float, default=1.0, help='aspect ratio of result images')
        parser.add_argument('--phase', type=str, default='test', help='train, val, test, etc')
        parser.add_argument('--eval', action='store_true', help='use eval mode during test time.')
        parser.add_argument('--num_test', type=int, default=0,
                            help='how many test batches to run; 0 (default) runs the whole set')
        parser.add_argument('--ensemble_fuse', default='mean', choices=['mean', 'median'],
                            help='with --name a,b,c (an ensemble of experiments): voxel-wise fusion of the members')
        parser.add_argument('--sw_overlap', type=float, default=DEFAULT_OVERLAP,
                            help='3D checkpoints (--model unet3d): overlap of the sliding windows over each volume, '
                                 'a fraction of the window (the training patch) in [0, 1)')
        add_outside_body_option(parser)
        add_dose_arguments(parser)                  # --dose photon,proton ... (docs/dose.md)
        # the test loader reads in order, one image at a time, without flips
        parser.set_defaults(model='test', load_size=parser.get_default('crop_size'))
        return parser

    def parse(self, args=None, setup_device=True):
        opt = super().parse(args, setup_device)
        opt.serial_batches = True
        opt.no_flip = True
        for key, value in SPEED_DEFAULTS.items():   # training's speed flags, off unless this parser has them
            if not hasattr(opt, key):
                setattr(opt, key, value)
        return opt
