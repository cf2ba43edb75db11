"""The CT's plan, once per subject: its beams, optimised beamlet weights and CT dose, kept in a cache folder under a
key of everything that changes them (the CT file's content, the masks, the plan settings), so that every row of a
comparison and every later run reuses them.

``<cache_dir>/<key>.npz`` (``weights``, ``dose_ct``; read with ``allow_pickle=False``) and ``<key>.json`` (beams and
record), each written atomically, the JSON last: an entry is complete when its JSON exists. An entry that cannot
be read is a miss (recomputed and rewritten), never an error."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from util.checkpoint import atomic_write
from util.json_file import read_json, write_json
from util.util import file_sha256

CACHE_VERSION = 1       # bump when what is cached, or how it is computed, changes


def ct_digest(path: str) -> str:
    """sha256 of the CT's content: of the file, or of a DICOM folder's files (their names and contents)."""
    if not os.path.isdir(path):
        return file_sha256(path)
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            h.update(f'{name}:{file_sha256(full)}\n'.encode())
    return h.hexdigest()


def plan_key(ct_path: str, structures_digest: str, plan_record: dict, engine_version: str) -> str:
    """The cache key of one plan: sha256 (20 hex digits) of the CT's content hash, the masks' hash, the plan
    settings and the engine's version."""
    text = json.dumps({'ct': ct_digest(ct_path), 'structures': structures_digest, 'plan': plan_record,
                       'engine': engine_version, 'cache_version': CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_plan(cache_dir: str, key: str) -> tuple[dict, np.ndarray, np.ndarray, dict] | None:
    """(beams, weights, CT dose, record) of entry ``key``, or None when it is missing or unreadable."""
    json_path, npz_path = (os.path.join(cache_dir, key + ext) for ext in ('.json', '.npz'))
    if not os.path.isfile(json_path):
        return None
    try:
        entry = read_json(json_path)
        with np.load(npz_path, allow_pickle=False) as arrays:
            weights, dose = arrays['weights'], arrays['dose_ct']
        return entry['stf'], weights, dose, entry['record']
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def store_plan(cache_dir: str, key: str, stf: dict, weights: np.ndarray, dose_ct: np.ndarray, record: dict) -> None:
    """Write entry ``key`` (arrays first, then the JSON that completes it), each file atomically."""
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write(lambda f: np.savez(f, weights=np.asarray(weights, np.float64),
                                    dose_ct=np.asarray(dose_ct, np.float32)),
                 os.path.join(cache_dir, key + '.npz'))
    write_json(os.path.join(cache_dir, key + '.json'), {'stf': stf, 'record': record})
