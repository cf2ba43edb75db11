"""A command-line flag of an argparse parser, looked up by its spelling (``'--crop_size'``).

argparse offers no public way to ask a parser for the action of a flag (``add_argument`` only raises
``argparse.ArgumentError`` on a clash, after the fact), so :func:`find_option` reads the parser's private table
``_option_string_actions`` (every spelling -> its action); this module is the only place that touches it.
"""
from __future__ import annotations

import argparse
from typing import Callable, TypeVar


def find_option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    """The action of ``flag`` (``'--crop_size'``; a ``--flag=value`` token must be split first) in ``parser``;
    None when the parser has no such flag."""
    return parser._option_string_actions.get(flag)


def has_option(parser: argparse.ArgumentParser, flag: str) -> bool:
    """True when ``parser`` has the flag ``flag`` (``'--crop_size'``)."""
    return find_option(parser, flag) is not None


def add_flag(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    """``parser.add_argument(flag, **kwargs)`` unless the parser has the flag already (generators, encoders and
    losses share some flags; the first to add one decides its help)."""
    if not has_option(parser, flag):
        parser.add_argument(flag, **kwargs)


T = TypeVar('T')


def three_values(text: str | int | float, convert: Callable[[str], T]) -> tuple[T, T, T] | None:
    """A flag of one or three values along x, y, z: '2' -> (2, 2, 2); '2,2,3' or '2x2x3' -> (2, 2, 3), each
    through ``convert`` (int, float); None when the text is not one or three such values."""
    try:
        values = tuple(convert(p) for p in str(text).replace('x', ',').split(','))
    except ValueError:
        return None
    if len(values) == 1:
        values *= 3
    return values if len(values) == 3 else None
