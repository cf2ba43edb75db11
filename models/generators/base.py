"""What every generator in models/generators/ provides, and the checks they share.

A generator file ``X.py`` holds one subclass of ``Generator`` named like the file; it builds ``--netG X``, or the
names in its ``names`` (``unet.py`` builds unet_128 and unet_256; each name begins with the file's name). Its static
``modify_commandline_options(parser)`` adds its flags (hidden ones shrink it for tests); its ``build(...)`` makes
the network from the options, initialised, with the official pretrained weights the user names loaded when
training (a test run takes every weight from the trained checkpoint, so it reads no pretrained file and gives no
random-initialisation warning). Every generator maps (N, input_nc, H, W) in [-1, 1] to (N, output_nc, H, W) in
[-1, 1].
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn

from util.distributed import is_main_process

from ..layers import check_image_channels

DEFAULT_SIZE = 256


class Generator(nn.Module):
    """Base class of the generators found by ``--netG`` name (see the module docstring)."""

    names: tuple[str, ...] = ()   # the --netG names this file builds; () means the file's own name

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return parser

    @classmethod
    def options(cls, opt: argparse.Namespace | None) -> argparse.Namespace:
        """This generator's flags at their defaults, overridden by those ``opt`` has (opt may be None);
        ``crop_size`` (the side the network is built for) defaults to 256, ``isTrain`` to True."""
        merged = cls.modify_commandline_options(argparse.ArgumentParser()).parse_args([])
        merged.crop_size, merged.isTrain = DEFAULT_SIZE, True
        for key in vars(merged):
            if opt is not None and hasattr(opt, key):
                setattr(merged, key, getattr(opt, key))
        return merged

    @classmethod
    def check_options(cls, opt: argparse.Namespace) -> None:
        """Refuse, when the command line is parsed (before any data or cache is built), options this generator
        cannot take (ValueError); nothing by default."""

    @classmethod
    def build(cls, name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool, init_type: str,
              init_gain: float, opt: argparse.Namespace) -> Generator:
        """The network ``--netG name`` (one of ``names``), initialised. ``norm`` (--norm) and ``use_dropout``
        (not --no_dropout) are the classic flags; generators with a published normalisation ignore them."""
        raise NotImplementedError


def int_tuple(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'2,2,2,2' -> (2, 2, 2, 2); a tuple or list is returned as a tuple."""
    if isinstance(text, str):
        return tuple(int(t) for t in text.split(',') if t.strip())
    return tuple(int(t) for t in text)


def check_size(name: str, size: int, multiple: int, rule: str) -> None:
    """ValueError unless ``size`` (--crop_size) is a positive multiple of ``multiple``; ``rule`` says why."""
    if size <= 0 or size % multiple:
        raise ValueError(f'--netG {name} needs --crop_size to be a multiple of {multiple} ({rule}); got {size}')


def check_built_size(x: torch.Tensor, input_nc: int, size: int, name: str) -> None:
    """ValueError unless ``x`` is (N, input_nc, size, size): transformer generators are built for one side."""
    check_image_channels(x, input_nc)
    if tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f'--netG {name} was built for {size}x{size} images (--crop_size {size}); got '
                         f'{x.shape[-2]}x{x.shape[-1]}: build it with the --crop_size of the data')


_warned: set[str] = set()


def warn_random_init(what: str, flag: str, official_file: str, url: str) -> None:
    """Say once per process (on the main process) that ``what`` is randomly initialised."""
    if what in _warned or not is_main_process():
        return
    _warned.add(what)
    print(f'WARNING: no {flag} given: the {what} is RANDOMLY INITIALISED, so results will not match the paper. '
          f'Download {url} and pass {flag} {official_file}.', file=sys.stderr, flush=True)
