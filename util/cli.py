"""Entry points report bad input as one clear line, not a traceback from deep inside, and the toolkit's own warnings
as ``<program>: warning: <message>``; a program run with its output kept in a log."""
from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
import time
import traceback
import warnings
from typing import Callable

from util.disk import cannot_write, describe, no_space

# what our own checks raise for bad input (files, options, data); anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError)


EXIT_USER_ERROR = 2     # as argparse uses for a bad command line: every user error exits with this status
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_FORMAT = warnings.formatwarning


def warning_line(message, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    """A UserWarning raised by the toolkit's code as ``<program>: warning: <message>`` (the user needs the message,
    not the file and line that raised it); any other warning as Python formats it."""
    if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(ROOT + os.sep):
        return f'{os.path.basename(sys.argv[0])}: warning: {message}\n'
    return PYTHON_FORMAT(message, category, filename, lineno, line)


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main()``; a user error prints ``<program>: error: <message>`` on stderr and exits with status 2
    (:data:`EXIT_USER_ERROR`, the status argparse gives a bad command line). Success is 0; a bug keeps its
    traceback (status 1).

    ``--verbose`` on the command line prints the full traceback before that line (the status stays 2).
    """
    warnings.formatwarning = warning_line
    try:
        main()
    except (*USER_ERRORS, OSError) as exc:
        message = str(exc) if isinstance(exc, USER_ERRORS) else disk_refusal(exc)
        if message is None:
            raise
        verbose = '--verbose' in sys.argv
        if verbose:
            traceback.print_exc()
        hint = '' if verbose else '\n(add --verbose for the full traceback)'
        print(f'{os.path.basename(sys.argv[0])}: error: {message}{hint}', file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def disk_refusal(exc: OSError) -> str | None:
    """The one line for an OSError that no writer turned into a util.disk.WriteError: a full disk, a read-only
    mount or a permission refused on a named file; None for anything else (a bug: it keeps its traceback)."""
    if not exc.filename or not (no_space(exc) or cannot_write(exc)):
        return None
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f'{exc.filename}: permission denied'
    return describe(exc, exc.filename)


def run_logged(cmd: list[str], log: str, quiet: bool) -> float:
    """Run ``cmd``, its output appended to ``log`` (and echoed unless ``quiet``); returns the wall time in s.
    RuntimeError with the output's tail when it fails."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    start = time.perf_counter()
    tail: list[str] = []
    with open(log, 'a') as f:
        f.write(f'$ {shlex.join(cmd)}\n')
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            f.write(line)
            tail = (tail + [line])[-40:]
            if not quiet:
                sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f'{shlex.join(cmd)} failed (exit {code}); log {log}:\n{"".join(tail)}')
    return time.perf_counter() - start
