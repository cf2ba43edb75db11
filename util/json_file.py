"""JSON objects in files: written atomically (temporary file + rename), read with errors that name the file.
"""
from __future__ import annotations

import json

from util.checkpoint import atomic_write


def write_json(path: str, obj: dict) -> None:
    """``obj`` as indented JSON, written atomically (temporary file + rename)."""
    def write(f) -> None:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write('\n')
    atomic_write(write, path, binary=False)


def read_json(path: str) -> dict:
    """A JSON object; ValueError naming the file when it does not parse."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON ({e})') from None
