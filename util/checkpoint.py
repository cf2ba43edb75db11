"""Checkpoint files: atomic writes and safe loads (``weights_only=True``)."""
from __future__ import annotations

import os
import tempfile

import torch

FORMAT = 'mrnet-toolkit/1'


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or SIGKILL at any moment leaves either the old file or the new one, never half a file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def safe_load(path: str, map_location='cpu'):
    """``torch.load(path, weights_only=True)`` with an error that names the file when it fails."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f'cannot load checkpoint {path}: {exc}') from exc


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


def network_file(state_dict: dict, meta: dict, options: dict) -> dict:
    """What ``<epoch>_net_<name>.pth`` holds: the weights plus what is needed to explain a mismatch."""
    return {'format': FORMAT, 'state_dict': state_dict, 'meta': meta, 'options': options}


def read_network_file(path: str, map_location='cpu') -> tuple[dict, dict, dict]:
    """(state_dict, meta, options) of a network file; a plain state dict (classic toolkit) is accepted too."""
    obj = safe_load(path, map_location)
    if isinstance(obj, dict) and obj.get('format') == FORMAT:
        return obj['state_dict'], obj.get('meta', {}), obj.get('options', {})
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}, {}
    raise RuntimeError(f'{path} is not a network checkpoint (expected a state dict)')
