"""One writer per run folder: ``checkpoints/NAME/train.lock`` names the training process (host, PID, start).

A second ``train.py`` on the same ``--name`` stops at once with an error naming the holder. A lock left by a
process that no longer exists on this host (killed, crashed machine) is taken over with a message. Readers
(test.py, predict) take no lock.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import socket
import sys
import time

from util.checkpoint import atomic_write
from util.disk import writing

LOCK_FILE = 'train.lock'


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux /proc), to tell it from a later process with the same
    PID; None where unknown."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    """Whether the process that wrote a lock still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True     # exists, owned by someone else
    now = _start_time(pid)
    return start is None or now is None or now == start


class RunLock:
    """The lock on ``folder``; :meth:`acquire` takes it (or raises RuntimeError), :meth:`release` drops it
    (also done at exit)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_FILE)
        self.held = False

    def owner(self) -> dict | None:
        """What the lock file says (host, pid, start, since, command), or None without a lock."""
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}       # half-written by a process killed while creating it

    def acquire(self) -> 'RunLock':
        me = {'host': socket.gethostname(), 'pid': os.getpid(), 'start': _start_time(os.getpid()),
              'since': time.strftime('%Y-%m-%d %H:%M:%S'), 'command': ' '.join(sys.argv)}
        guard_path = os.path.join(self.folder, '.' + LOCK_FILE + '.guard')
        with writing(guard_path):
            os.makedirs(self.folder, exist_ok=True)
            guard = open(guard_path, 'a')
        # the check and the take-over happen under a short flock, so two starters cannot both take a stale lock
        with guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            owner = self.owner()
            if owner is not None and not self._ours(owner, me):
                self._refuse_or_take_over(owner, me)
            atomic_write(lambda f: json.dump(me, f), self.path, binary=False)   # a full disk: one line, no leftover
        self.held = True
        atexit.register(self.release)
        return self

    @staticmethod
    def _ours(owner: dict, me: dict) -> bool:
        """This very process holds it already (training run twice in one python process, as tests do)."""
        return owner.get('host') == me['host'] and owner.get('pid') == me['pid'] and owner.get('start') == me['start']

    def _refuse_or_take_over(self, owner: dict, me: dict) -> None:
        if not owner:
            print(f'{self.path}: taking over an unreadable lock (its writer was killed while creating it)')
            return
        who = f'PID {owner.get("pid")} on {owner.get("host")}, since {owner.get("since")}'
        if owner.get('host') == me['host'] and not _alive(int(owner.get('pid', -1)), owner.get('start')):
            print(f'{self.path}: taking over a stale lock of {who} (that process no longer exists)')
            return
        where = 'this host' if owner.get('host') == me['host'] else f'host {owner.get("host")}'
        hint = ('' if owner.get('host') == me['host'] else
                f'; if that run is dead, delete {self.path}')
        raise RuntimeError(f'{self.folder} is in use by another training run ({who}; on {where}: '
                           f'{owner.get("command", "?")}): stop it, wait for it, or choose another --name{hint}')

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if not self.held:
            return
        self.held = False
        owner = self.owner()
        if owner and owner.get('pid') == os.getpid():
            os.remove(self.path)
