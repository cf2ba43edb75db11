"""Checkpoint files: atomic writes, saves of several files committed as one unit, and safe loads
(``weights_only=True``).

A checkpoint (``latest``: every network plus ``latest_state.pth``) is written by :func:`save_together`:
each file goes to a temporary file in the same folder first; once all are complete a small journal naming
them is written (atomically), and only then are they renamed into place. A process killed before the
journal leaves the old checkpoint untouched (the temporary files are garbage); killed after it, the
journal lets :func:`recover` finish the renames. Either way the files of one checkpoint always come from
one save. Every file also carries the save's id (:func:`save_stamp`), checked when the checkpoint is read.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
import uuid
import zipfile

import torch

from util.disk import check_free_space, writing

FORMAT = 'mrnet-toolkit/1'
JOURNAL_SUFFIX = '.commit.json'


def file_mode(folder: bool = False) -> int:
    """The permissions a new file gets from the user's umask (``0o666 & ~umask``), not mkstemp's 0600; a new
    folder's with ``folder`` (``0o777 & ~umask``, not mkdtemp's 0700)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def _fsync_dir(folder: str) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_temp_file(name: str) -> bool:
    """Whether file ``name`` is a temporary file of :func:`atomic_write` (``.<final name>.<random>.tmp``)."""
    return name.startswith('.') and name.endswith('.tmp')


def _write_temp(write, path: str, binary: bool = True) -> str:
    """Create a temporary file next to ``path``, fill it with ``write(file)``, fsync it and give it the umask's
    permissions; returns its path (removed again if writing fails). A full or read-only disk is a
    util.disk.WriteError naming ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
        try:
            with (os.fdopen(fd, 'wb') if binary else os.fdopen(fd, 'w', encoding='utf-8')) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, file_mode())
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return tmp


def atomic_write(write, path: str, binary: bool = True) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same folder, fsync, then rename it over
    ``path``: a crash or SIGKILL at any moment leaves either the old file or the new one, never half a file; a
    failed write (a full disk: util.disk.WriteError) leaves the old file and no temporary file."""
    tmp = _write_temp(write, path, binary)
    try:
        with writing(path):
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(lambda f: torch.save(obj, f), path)


def save_stamp(label: str | int, counters: dict | None = None) -> dict:
    """What every file of one save carries: a fresh id, the label and the loop counters (for messages)."""
    counters = counters or {}
    return {'id': uuid.uuid4().hex, 'label': str(label),
            **{k: int(counters[k]) for k in ('epoch', 'epoch_iter', 'total_iters') if k in counters}}


def describe_stamp(stamp: dict | None) -> str:
    if not stamp:
        return 'an unstamped save'
    if 'total_iters' in stamp:
        return f'epoch {stamp.get("epoch")}, {stamp["total_iters"]} images seen'
    return f'save {stamp["id"][:8]}'


def journal_path(folder: str, label: str | int) -> str:
    return os.path.join(folder, f'.{label}{JOURNAL_SUFFIX}')


SAVE_OVERHEAD = 1 << 20     # bytes allowed per file beyond its tensors' data (pickle, zip records, alignment)


def tensor_bytes(obj) -> int:
    """Bytes of tensor data in ``obj`` (tensors in nested dicts, lists and tuples; a shared storage once)."""
    seen: set[int] = set()
    total = 0

    def walk(x) -> None:
        nonlocal total
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
    walk(obj)
    return total


def save_together(files: dict[str, object], journal: str) -> None:
    """``torch.save`` every ``path: obj`` of ``files`` as one unit: after a crash at any moment, either every
    file is the new one or (after :func:`recover`) every file is the old one. ``journal`` is the commit
    record's path (in the same folder as the files).

    The new files are written beside the old ones, so the disk must hold them all: checked before anything is
    written (util.disk.WriteError naming the files). A disk that fills up or refuses meanwhile is a WriteError
    too; the old files stay and no temporary file is left."""
    folder = os.path.dirname(os.path.abspath(journal))
    need = sum(tensor_bytes(obj) + SAVE_OVERHEAD for obj in files.values())
    with writing(journal):
        os.makedirs(folder, exist_ok=True)
    check_free_space(folder, need, f'the checkpoint {", ".join(os.path.basename(p) for p in files)} in {folder} '
                                   f'(the last whole checkpoint is kept)')
    staged: dict[str, str] = {}
    try:
        for path, obj in files.items():
            staged[os.path.abspath(path)] = _write_temp(lambda f, o=obj: torch.save(o, f), path)
        record = {os.path.basename(tmp): os.path.basename(path) for path, tmp in staged.items()}
        atomic_write(lambda f: json.dump({'files': record}, f), journal, binary=False)
    except BaseException:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    _apply_journal(folder, journal, record)


def _apply_journal(folder: str, journal: str, record: dict[str, str]) -> None:
    """Rename the journal's temporary files into place (those already moved are skipped), then drop it."""
    for tmp, final in record.items():
        if os.path.exists(os.path.join(folder, tmp)):
            os.replace(os.path.join(folder, tmp), os.path.join(folder, final))
    _fsync_dir(folder)
    os.remove(journal)
    _fsync_dir(folder)


def recover(folder: str) -> list[str]:
    """Finish or discard what an interrupted process left in ``folder``; returns one line per thing done.

    A journal (the save was complete) has its renames finished; temporary files without one (a save cut
    short, a write killed half-way) are removed, which leaves the previous whole checkpoint in use. Only the
    folder's single writer may call this (see util/run_lock.py).
    """
    if not os.path.isdir(folder):
        return []
    lines = []
    for journal in sorted(glob.glob(os.path.join(glob.escape(folder), '.*' + JOURNAL_SUFFIX))):
        label = os.path.basename(journal)[1:-len(JOURNAL_SUFFIX)]
        with open(journal) as f:
            record = json.load(f)['files']
        _apply_journal(folder, journal, record)
        lines.append(f'checkpoint {label}: completed a save that was interrupted after all its files were '
                     f'written ({", ".join(sorted(record.values()))})')
    stray = sorted(os.path.join(folder, f) for f in os.listdir(folder) if is_temp_file(f))
    for tmp in stray:
        os.remove(tmp)
    if stray:
        names = sorted({os.path.basename(t)[1:].rsplit('.', 2)[0] for t in stray})
        lines.append(f'an interrupted save was discarded (unfinished {", ".join(names)}; {len(stray)} temporary '
                     f'file(s) removed): the last whole checkpoint is used')
    return lines


class DamagedFileError(RuntimeError, ValueError):
    """A file named as a checkpoint that cannot be read as one (damaged, or something else): a user error."""


def why_unreadable(path: str) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in the user's terms (never torch's advice to load with
    ``weights_only=False``, which a damaged or foreign file must not get)."""
    size = os.path.getsize(path)
    if size == 0:
        return 'the file is empty (0 bytes)'
    try:
        with zipfile.ZipFile(path) as archive:
            whole = archive.testzip() is None and any(n.endswith('data.pkl') for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        whole = False
    if whole:
        return ('it holds Python objects besides tensors and plain values (a whole pickled model?), which are never '
                'unpickled because loading them could run any code; store a state_dict instead')
    return f'the file ({size} bytes) is damaged (truncated or overwritten) or is not a checkpoint'


def load_torch_file(path: str, label: str, missing: str | None = None, map_location='cpu'):
    """``torch.load(path, weights_only=True)`` of a file the user named as ``label`` (e.g. ``--sam_checkpoint X``).
    FileNotFoundError ``missing`` (default ``<label>: no such file``) when there is none; DamagedFileError
    ``<label>: cannot be read as a PyTorch checkpoint: <why>`` (:func:`why_unreadable`) when it does not load."""
    if not os.path.isfile(path):
        raise FileNotFoundError(missing or f'{label}: no such file')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling and I/O raise many kinds
        raise DamagedFileError(f'{label}: cannot be read as a PyTorch checkpoint: {why_unreadable(path)}') from exc


def safe_load(path: str, map_location='cpu'):
    """``torch.load(path, weights_only=True)`` of a checkpoint, with errors naming the file
    (:func:`load_torch_file`)."""
    return load_torch_file(path, f'checkpoint {path}', f'checkpoint {path} does not exist', map_location)


def plain_options(opt) -> dict:
    """The options as plain python values (storable in a weights-only checkpoint)."""
    out = {}
    for k, v in vars(opt).items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v):
            out[k] = list(v)
        else:
            out[k] = str(v)
    return out


def network_file(state_dict: dict, meta: dict, options: dict, stamp: dict | None = None) -> dict:
    """What ``<epoch>_net_<name>.pth`` holds: the weights, what is needed to explain a mismatch, and the stamp
    of the save it belongs to (:func:`save_stamp`)."""
    return {'format': FORMAT, 'state_dict': state_dict, 'meta': meta, 'options': options, 'checkpoint': stamp or {}}


def unpack_network_file(obj, path: str) -> tuple[dict, dict, dict, dict]:
    """(state_dict, meta, options, stamp) of a loaded network file; a plain state dict (classic toolkit) gives
    empty meta, options and stamp."""
    if isinstance(obj, dict) and obj.get('format') == FORMAT:
        return obj['state_dict'], obj.get('meta', {}), obj.get('options', {}), obj.get('checkpoint') or {}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}, {}, {}
    raise RuntimeError(f'{path} is not a network checkpoint (expected a state dict)')


def read_network_file(path: str, map_location='cpu') -> tuple[dict, dict, dict]:
    """(state_dict, meta, options) of a network file; a plain state dict (classic toolkit) is accepted too."""
    return unpack_network_file(safe_load(path, map_location), path)[:3]


def training_done(checkpoint_dir: str, last_epoch: int) -> bool:
    """Whether the final epoch's networks (``<last_epoch>_net_*.pth``) or a latest state past it exist, or
    validation stopped the run early (--patience)."""
    if glob.glob(os.path.join(glob.escape(checkpoint_dir), f'{last_epoch}_net_*.pth')):
        return True
    state = os.path.join(checkpoint_dir, 'latest_state.pth')
    if not os.path.isfile(state):
        return False
    counters = safe_load(state)['counters']
    return int(counters['epoch']) > last_epoch or bool(counters.get('validation', {}).get('stopped'))
