"""Every generator, found by its ``--netG`` name like models and datasets: ``--netG X`` imports
``models/generators/X.py``, or, for a name that is one of a file's variants, the file whose name it begins with
(``unet_256`` -> ``unet.py``, ``resnet_9blocks`` -> ``resnet.py``), and uses its class named like the file
(case-insensitive, underscores dropped), a subclass of ``Generator`` (see base.py) whose ``names`` list the
variants. A new generator is one new file.

``networks.define_G`` builds through ``define_generator``; the options parser adds the chosen generator's flags
through ``add_generator_options`` and checks them with ``check_generator_options``.
"""
from __future__ import annotations

import argparse
import sys

import torch.nn as nn

from util.registry import available, find_class


def _files() -> list[str]:
    return available(sys.modules[__name__], '')


def generator_file(name: str) -> str | None:
    """The file (module name) of models/generators/ that builds ``--netG name``, or None."""
    files = _files()
    if name in files:
        return name
    return next((f for f in files if name.startswith(f + '_')), None)


def _generator_class(file: str) -> tuple[type, tuple[str, ...]]:
    """The Generator subclass of ``file`` and the --netG names it builds."""
    from .base import Generator
    cls = find_class(sys.modules[__name__], file, '', Generator, '--netG')
    return cls, cls.names or (file,)


def available_generators() -> list[str]:
    """Every ``--netG`` name (imports each generator file)."""
    return sorted(n for f in _files() for n in _generator_class(f)[1])


def _lookup(name: str) -> type | None:
    file = generator_file(name)
    if file is None:
        return None
    cls, names = _generator_class(file)
    return cls if name in names else None


def find_generator(name: str) -> type:
    """The Generator subclass that builds ``--netG name``; ValueError listing every name when there is none."""
    cls = _lookup(name)
    if cls is None:
        choices = ', '.join(repr(n) for n in available_generators())
        raise ValueError(f'generator {name!r} is not recognized; choose one of {choices}')
    return cls


def add_generator_options(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """Add the flags of generator ``name`` (nothing for an unknown name: building it reports that)."""
    cls = _lookup(name)
    return parser if cls is None else cls.modify_commandline_options(parser)


def check_generator_options(opt: argparse.Namespace) -> None:
    """The chosen generator's own check of the parsed options (``Generator.check_options``); an unknown --netG
    is left to building, which reports it."""
    cls = _lookup(opt.netG)
    if cls is not None:
        cls.check_options(opt)


def define_generator(name: str, input_nc: int, output_nc: int, ngf: int, norm: str, use_dropout: bool,
                     init_type: str, init_gain: float, opt: argparse.Namespace | None = None) -> nn.Module:
    """Build generator ``name`` from the options (a CPU module, initialised and with any pretrained weights
    the options name loaded). ValueError listing every generator for an unknown name."""
    cls = find_generator(name)
    return cls.build(name, input_nc, output_nc, ngf, norm, use_dropout, init_type, init_gain, cls.options(opt))
