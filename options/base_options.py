"""Options shared by training and testing; models and datasets add their own through
``modify_commandline_options(parser, is_train)``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import torch

import data
import models
from evaluation.scoring import add_volume_metric_options
from options import ingredients
from util import distributed
from util.checkpoint import atomic_write
from util.disk import writing
from util.run_lock import RunLock
from util.util import mkdirs


class BaseOptions:
    """Builds the parser, applies model and dataset defaults, prints and saves the options."""

    is_train = False

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        # basic parameters
        parser.add_argument('--dataroot', default=None,
                            help='path to the data (aligned: DIR/train, DIR/test; unaligned: DIR/trainA, DIR/trainB; '
                                 'triplanar_aligned: one folder per subject, default ./datasets/demo_synthrad)')
        parser.add_argument('--name', type=str, default='experiment_name',
                            help='name of the experiment; decides where samples and models are stored')
        parser.add_argument('--gpu_ids', type=str, default='0',
                            help='gpu ids: e.g. 0  0,1,2  0,2; use -1 for CPU '
                                 '(falls back to CPU when no GPU is present)')
        parser.add_argument('--checkpoints_dir', type=str, default='./checkpoints', help='models are saved here')
        parser.add_argument('--seed', type=int, default=2024,
                            help='seed for python, numpy, torch and every data loader worker')
        # model parameters
        parser.add_argument('--model', type=str, default='cycle_gan',
                            help=f'chooses which model to use: {", ".join(models.available_models())}')
        parser.add_argument('--input_nc', type=int, default=3,
                            help='# of input image channels: 3 for RGB and 1 for grayscale')
        parser.add_argument('--output_nc', type=int, default=3,
                            help='# of output image channels: 3 for RGB and 1 for grayscale')
        parser.add_argument('--ngf', type=int, default=64, help='# of gen filters in the last conv layer')
        parser.add_argument('--ndf', type=int, default=64, help='# of discrim filters in the first conv layer')
        parser.add_argument('--netD', type=str, default='basic',
                            help='[basic | n_layers | pixel]; basic is a 70x70 PatchGAN')
        parser.add_argument('--netG', type=str, default='resnet_9blocks',
                            help='[resnet_9blocks | resnet_6blocks | unet_256 | unet_128 | sam_unet | transunet | '
                                 'swin_unet | resvit | res_cnn | tcgan | ppt | unet3d]')
        parser.add_argument('--n_layers_D', type=int, default=3, help='only used if netD==n_layers')
        parser.add_argument('--norm', type=str, default='instance',
                            help='instance, batch, syncbatch or none normalization')
        parser.add_argument('--init_type', type=str, default='normal',
                            help='network initialization [normal | xavier | kaiming | orthogonal]')
        parser.add_argument('--init_gain', type=float, default=0.02,
                            help='scaling factor for normal, xavier and orthogonal.')
        parser.add_argument('--no_dropout', action='store_true', help='no dropout for the generator')
        # dataset parameters
        parser.add_argument('--dataset_mode', type=str, default='unaligned',
                            help=f'chooses how datasets are loaded: {", ".join(data.available_datasets())}')
        parser.add_argument('--direction', type=str, default='AtoB', choices=['AtoB', 'BtoA'], help='AtoB or BtoA')
        parser.add_argument('--serial_batches', action='store_true',
                            help='if true, takes images in order to make batches, otherwise takes them randomly')
        parser.add_argument('--num_threads', default=4, type=int, help='# threads for loading data')
        parser.add_argument('--batch_size', type=int, default=1, help='input batch size (per process under torchrun)')
        parser.add_argument('--load_size', type=int, default=286, help='scale images to this size')
        parser.add_argument('--crop_size', type=int, default=256, help='then crop to this size')
        parser.add_argument('--max_dataset_size', type=int, default=float('inf'),
                            help='maximum number of samples allowed per dataset')
        parser.add_argument('--preprocess', type=str, default='resize_and_crop',
                            help='scaling and cropping of images at load time [resize_and_crop | crop | scale_width | '
                                 'scale_width_and_crop | none | pad]')
        parser.add_argument('--no_flip', action='store_true',
                            help='if specified, do not flip the images for data augmentation')
        parser.add_argument('--display_winsize', type=int, default=256,
                            help='display window size for both visdom and HTML')
        # additional parameters
        parser.add_argument('--epoch', type=str, default='latest',
                            help='which epoch to load? set to latest to use latest cached model')
        parser.add_argument('--load_iter', type=int, default=0,
                            help='which iteration to load? if load_iter > 0, the code will load models by '
                                 'iter_[load_iter]; otherwise, by [epoch]')
        parser.add_argument('--verbose', action='store_true', help='if specified, print more debugging information')
        parser.add_argument('--suffix', default='', type=str,
                            help='customized suffix: opt.name = opt.name + suffix: '
                                 'e.g., {model}_{netG}_size{load_size}')
        parser.add_argument('--save_raw', action='store_true',
                            help='also save results as float32 .npy and .tif, so no value is lost')
        return ingredients.add_ingredient_options(parser)

    def build_parser(self, args: Sequence[str] | None) -> argparse.ArgumentParser:
        """The parser with the base flags plus those of the chosen model, dataset and generator. ``--help`` is
        added last, so that it lists all of them (an earlier partial parse would print the base flags and exit)."""
        parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=False)
        parser = self.initialize(parser)
        opt, _ = parser.parse_known_args(args)
        parser = models.get_option_setter(opt.model)(parser, self.is_train)
        opt, _ = parser.parse_known_args(args)
        parser = data.get_option_setter(opt.dataset_mode)(parser, self.is_train)
        opt, _ = parser.parse_known_args(args)
        if data.find_dataset_using_name(opt.dataset_mode).volumetric:
            parser = add_volume_metric_options(parser)
        from models.generators import add_generator_options
        parser = ingredients.apply_recipe(add_generator_options(parser, opt.netG), args, self.is_train)
        parser.add_argument('-h', '--help', action='help', default=argparse.SUPPRESS,
                            help='show this help message and exit')
        return parser

    def format_options(self, opt: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
        """The option table; non-default values are marked with their default."""
        lines = ['----------------- Options ---------------']
        for k, v in sorted(vars(opt).items()):
            default = parser.get_default(k)
            mark = f'\t[default: {default}]' if v != default else ''
            lines.append(f'{k:>25}: {str(v):<30}{mark}')
        lines.append('----------------- End -------------------')
        return '\n'.join(lines)

    def parse(self, args: Sequence[str] | None = None, setup_device: bool = True,
              lock_run: bool = False) -> argparse.Namespace:
        """Parse ``args`` (default: sys.argv), print and save the table, set up devices and processes.

        ``lock_run`` (train.py): take the run folder's lock (util/run_lock.py) before writing anything into it;
        another run on the same folder raises RuntimeError. The lock is kept in ``self.run_lock``.
        ``setup_device=False`` (tests, benchmarks) sets up no GPU or process group: the options then say one
        process on the CPU (``device``, ``rank``, ``world_size``, ``distributed``, as util/distributed.py fills them).
        """
        parser = self.build_parser(args)
        opt = parser.parse_args(args)
        opt.isTrain = self.is_train
        opt = ingredients.finish(opt) if self.is_train else ingredients.inherit(
            opt, parser, sys.argv[1:] if args is None else args)
        if opt.suffix:
            opt.name = opt.name + ('_' + opt.suffix.format(**vars(opt)))
        opt.gpu_ids = [int(i) for i in str(opt.gpu_ids).split(',') if i.strip() != '' and int(i) >= 0]
        from models.generators import check_generator_options
        check_generator_options(opt)        # before any data, cache or run folder is made
        table = self.format_options(opt, parser)
        if setup_device:
            distributed.setup(opt)
        else:
            opt.device, opt.rank, opt.world_size, opt.distributed = torch.device('cpu'), 0, 1, False
        self.opt, self.table = opt, table
        if opt.rank == 0:
            print(table)
            if self.is_train:         # test.py writes its table beside its results (the checkpoints may be read-only)
                expr_dir = os.path.join(opt.checkpoints_dir, ingredients.ensemble_names(opt.name)[0])
                with writing(expr_dir):
                    mkdirs(expr_dir)
                if lock_run:
                    self.run_lock = RunLock(expr_dir).acquire()
                self.save_table(expr_dir)
        return opt

    def save_table(self, folder: str) -> str:
        """Write the parsed options' table as ``<folder>/<phase>_opt.txt`` (the folder made when missing),
        atomically; returns its path."""
        path = os.path.join(folder, f'{self.opt.phase}_opt.txt')
        with writing(path):
            mkdirs(folder)
        atomic_write(lambda f: f.write(self.table + '\n'), path, binary=False)
        return path
