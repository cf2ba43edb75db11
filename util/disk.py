"""Where files can be written: one verdict for every failed write, and the checks made before writing.

Every writer of the toolkit (checkpoints, the run lock, slice store, SAM cache, splits, predictions, pages) turns
the operating system's errors into one line naming the file: a full disk (ENOSPC, EDQUOT) becomes
``no space left on <mount point> while writing <file> (<n> free)``; a folder that cannot be written, whatever the
reason (EACCES, EPERM: permissions; EROFS: a read-only mount), becomes ``cannot write <file>: <folder> is
read-only``/``permission denied``. :func:`cannot_write` is the one test for "not writable here" that decides the
documented fallbacks (split kept in the experiment folder, SAM features computed without rewriting the cache).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from typing import Iterator

NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class WriteError(RuntimeError):
    """A write that failed for a reason of the disk (full, read-only, no permission): a user error (exit 2)."""


def os_error_of(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or the one it was raised from or while handling (torch.save reports a
    full disk as a RuntimeError raised while handling the OSError of the write)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` says that this place cannot be written: permissions (EACCES, EPERM) or read-only media
    (EROFS), alike."""
    err = os_error_of(exc)
    return err is not None and err.errno in NOT_WRITABLE


def no_space(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a full disk or quota (ENOSPC, EDQUOT)."""
    err = os_error_of(exc)
    return err is not None and err.errno in NO_SPACE


def mounts() -> list[str]:
    """The mount points of /proc/self/mounts (octal escapes such as ``\\040`` decoded); [] where there is none."""
    try:
        with open('/proc/self/mounts') as f:
            fields = [line.split() for line in f]
    except OSError:
        return []
    return [re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), f[1]) for f in fields if len(f) > 1]


def mount_point(path: str) -> str:
    """The mount point of the file system holding ``path`` (or its nearest existing parent): the deepest one of
    :func:`mounts` above it (a read-only bind mount of a folder, which os.path.ismount cannot tell from its
    parent's file system, included), else the nearest folder that os.path.ismount recognises."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    real = os.path.realpath(path)
    above = [m for m in mounts() if real == m or real.startswith(m.rstrip('/') + '/')]
    if above:
        return max(above, key=len)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def human_bytes(n: float) -> str:
    """``n`` bytes as B, KiB, MiB, GiB or TiB."""
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(n) < 1024:
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    return f'{n:.1f} TiB'


def free_bytes(folder: str) -> int:
    """Free bytes on the file system of ``folder`` (or of its nearest existing parent)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def describe(exc: BaseException, path: str) -> str | None:
    """The one-line verdict on a failed write of ``path``, or None when ``exc`` is not a disk's refusal."""
    err = os_error_of(exc)
    if err is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if err.errno in NO_SPACE:
        return (f'no space left on {mount_point(folder)} while writing {path} ({human_bytes(free_bytes(folder))} '
                f'free); free some space or write elsewhere')
    if err.errno == errno.EROFS:
        return f'cannot write {path}: {mount_point(folder)} is mounted read-only'
    if err.errno in NOT_WRITABLE:
        return f'cannot write {path}: permission denied on {folder}'
    return None


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turn a disk's refusal while writing ``path`` (full, read-only, no permission) into :class:`WriteError`
    with :func:`describe`'s line; other errors pass unchanged."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, RuntimeError) as exc:
        message = describe(exc, path)
        if message is None:
            raise
        raise WriteError(message) from exc


def check_free_space(folder: str, need: int, what: str) -> None:
    """WriteError when the file system of ``folder`` has less than ``need`` bytes free for ``what``."""
    free = free_bytes(folder)
    if need > free:
        raise WriteError(f'not enough space on {mount_point(folder)} for {what}: it needs {human_bytes(need)}, '
                         f'{human_bytes(free)} are free; free some space or write elsewhere')


def check_writable(folder: str, what: str) -> None:
    """WriteError naming ``what`` (a file meant to go into ``folder``) when ``folder``, or the nearest existing
    folder above it (where it would be created), cannot be written; checked by creating a file there and removing
    it at once, so nothing is left behind."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WriteError(f'cannot write {what}: {existing} is a file, not a folder')
    with writing(what):
        fd, probe = tempfile.mkstemp(prefix='.write-check-', dir=existing)
        os.close(fd)
        os.remove(probe)
