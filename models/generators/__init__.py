"""The paper's baseline generators (Tables II-III), found by name like models and datasets:
``--netG X`` imports ``models/generators/X.py`` and uses its class named like the file (case-insensitive,
underscores dropped), a subclass of ``BaselineGenerator`` (see base.py). A new generator is one new file.

``networks.define_G`` hands every name that is not a classic generator to ``define_generator``; the options
parser adds the chosen generator's flags through ``add_generator_options``.
"""
from __future__ import annotations

import argparse
import sys

import torch.nn as nn

from util.registry import available, find_class


def available_generators() -> list[str]:
    """Names of the generators in this package (one file each)."""
    return available(sys.modules[__name__], '')


def find_generator(name: str) -> type:
    from .base import BaselineGenerator
    return find_class(sys.modules[__name__], name, '', BaselineGenerator, '--netG')


def add_generator_options(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """Add the flags of generator ``name`` (nothing for a classic generator or an unknown name)."""
    if name not in available_generators():
        return parser
    return find_generator(name).modify_commandline_options(parser)


def define_generator(name: str, input_nc: int, output_nc: int, ngf: int, init_type: str, init_gain: float,
                     opt: argparse.Namespace | None = None, classic: tuple[str, ...] = ()) -> nn.Module:
    """Build generator ``name`` from the options (a CPU module, initialised and with any pretrained weights
    the options name loaded). ValueError listing every generator (``classic`` ones too) for an unknown name."""
    if name not in available_generators():
        choices = ', '.join(repr(n) for n in (*classic, *available_generators()))
        raise ValueError(f'generator {name!r} is not recognized; choose one of {choices}')
    cls = find_generator(name)
    return cls.build(input_nc, output_nc, ngf, init_type, init_gain, cls.options(opt))
