"""Memory-mapped ``.npy`` files kept open (the most recently used ones), each checked against truncation.

A mapped file that another process shortens kills the reader with SIGBUS (no message, no traceback) the moment it
touches a page past the new end. So every access first compares the file's size with what its header promises
(:func:`check_whole`) and a shortened file is a :class:`TruncatedFileError` the caller reports and handles (the
SAM cache rebuilds the chunk; the slice store names the file).
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np


class TruncatedFileError(ValueError):
    """A ``.npy`` file shorter than its header says."""


def check_whole(path: str, array: np.ndarray) -> None:
    """TruncatedFileError when ``path`` holds fewer bytes than the memory map ``array`` of it covers."""
    need = int(getattr(array, 'offset', 0)) + array.nbytes
    size = os.stat(path).st_size
    if size < need:
        raise TruncatedFileError(f'{path} is truncated: {size} of its {need} bytes are left')


class MappedFiles:
    """The last ``limit`` ``.npy`` files read through :meth:`get`, memory-mapped read-only.

    Pickled (to DataLoader workers) it travels empty: each process maps its own files.
    """

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self._open: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        return {'limit': self.limit, '_open': OrderedDict()}

    def __len__(self) -> int:
        return len(self._open)

    def get(self, path: str) -> np.ndarray:
        """The mapped array of ``path`` (opened on first use); TruncatedFileError when the file was shortened
        (:func:`check_whole`, checked at every call), ValueError/OSError when it cannot be mapped."""
        array = self._open.get(path)
        if array is None:
            array = np.load(path, mmap_mode='r')
            self._open[path] = array
            while len(self._open) > self.limit:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(path)
        try:
            check_whole(path, array)
        except (TruncatedFileError, OSError):
            self.drop(path)
            raise
        return array

    def drop(self, path: str) -> None:
        """Forget (unmap) ``path``."""
        self._open.pop(path, None)
