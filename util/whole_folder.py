"""A folder of several files written as a whole (a QA page and its images): filled in a hidden temporary folder
beside it and renamed into place, so that it appears complete or not at all; a failed or killed write leaves the
folder that was there before.

    with whole_folder('out/p_sct.nii.gz_qa') as tmp:      # fill tmp; on success it becomes out/p_sct.nii.gz_qa
        ...

The temporary folder is ``.<name>.<host>-<pid>.<random>.partial``; what a killed run left (this host, its process
gone) is removed by the next write of the same folder. An existing folder is replaced by one atomic exchange of the
two (Linux ``renameat2(RENAME_EXCHANGE)``), so a kill at any moment leaves the old folder or the new one under its
name, never neither; where the system cannot exchange (another OS, a file system without it) two renames do it, and
a kill between them leaves the old folder in a ``.partial`` one.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import socket
import tempfile
from typing import Iterator

from util.checkpoint import file_mode
from util.disk import writing

PARTIAL = '.partial'


def _owner(folder: str) -> str:
    return f'.{os.path.basename(folder)}.{socket.gethostname()}-'


def _process_gone(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:               # alive, another user's
        return False
    return False


def leftovers(folder: str) -> list[str]:
    """The temporary folders of ``folder`` left by killed runs on this host (their process no longer exists)."""
    parent = os.path.dirname(os.path.abspath(folder))
    prefix = _owner(folder)
    found = []
    for entry in os.listdir(parent) if os.path.isdir(parent) else []:
        if entry.startswith(prefix) and entry.endswith(PARTIAL):
            pid = entry[len(prefix):].split('.', 1)[0]
            if pid.isdigit() and _process_gone(pid):
                found.append(os.path.join(parent, entry))
    return found


AT_FDCWD, RENAME_EXCHANGE = -100, 2        # <fcntl.h>, <linux/fs.h>


@functools.cache
def _renameat2():
    """The C library's ``renameat2``, or None where it has none (or cannot be opened: Windows)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), 'renameat2', None)
    except (OSError, TypeError):
        return None


def exchange(a: str, b: str) -> bool:
    """Swap the paths ``a`` and ``b`` (both existing) in one atomic step; False, with nothing changed, where the
    system cannot (no ``renameat2``, or a file system that refuses the exchange); OSError naming ``b`` otherwise."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


@contextlib.contextmanager
def scratch_folder(path: str) -> Iterator[str]:
    """Yield a hidden temporary folder beside ``path`` (``.<name>.<host>-<pid>.<random>.partial``) to write what
    becomes ``path`` in; it is removed when the block ends, and what killed runs left for the same ``path`` is
    removed before. A full or read-only disk while making it is a util.disk.WriteError naming ``path``."""
    path = os.path.abspath(path)
    with writing(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for stale in leftovers(path):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f'{_owner(path)}{os.getpid()}.', suffix=PARTIAL, dir=os.path.dirname(path))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def whole_folder(folder: str) -> Iterator[str]:
    """Yield a temporary folder (:func:`scratch_folder`) to fill; when the block ends without error it replaces
    ``folder`` (an existing one is replaced whole), otherwise it is removed and ``folder`` stays as it was. A full or
    read-only disk while making or renaming it is a util.disk.WriteError naming ``folder``; the writer names the
    files it writes."""
    folder = os.path.abspath(folder)
    with scratch_folder(folder) as tmp:
        yield tmp
        with writing(folder):
            os.chmod(tmp, file_mode(folder=True))
            if not os.path.exists(folder):
                os.replace(tmp, folder)
            elif not exchange(tmp, folder):         # else: tmp now holds the old folder, removed by scratch_folder
                with scratch_folder(folder) as old:
                    os.replace(folder, os.path.join(old, 'old'))
                    os.replace(tmp, folder)
