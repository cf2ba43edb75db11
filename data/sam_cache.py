"""The SAM feature cache: each slice's frozen SAM feature computed once and reused by every epoch and run.

A frozen SAM encoder gives the same feature F (256, S/16, S/16) for the same slice whatever the epoch, the
ablation or the comparison row, as long as the SAM weights, encoder, input size, precision and the slice
itself do not change. This module stores F on disk, memory-mapped, and hands it to the data loader, so
training and testing skip SAM entirely once the cache is built.

Layout, under ``--sam_cache`` (default: the slice store's folder, ``<dataroot>/.cache``)::

    sam_<digest>/key.json                          what every feature here depends on (digest = its hash)
    sam_<digest>/<subject>/<plane><first>-<last>.<token>.npy    (n, 256, S/16, S/16) float16 chunk
    sam_<digest>/<subject>/<plane><first>-<last>.<token>.json   its manifest: slice indices, subject
                                                                fingerprint, crc32 of every row

The key holds the SAM file's sha256 (or the seeded random init), encoder shape, input size, precision,
storage dtype, the slice store's key, the input modality, slice size and resizing; a cache built for
other settings lives in another folder and is never read. Each subject's fingerprint (its source files and
intensity map) is in the chunk manifests: a changed subject's chunks are dropped and rebuilt.

Chunks are written atomically (data, then manifest, each to a temporary file renamed into place), with a
random token in the name, so an interrupted build leaves only whole chunks (the next run computes the
rest) and two processes never write one file; a full disk stops the build with one line naming the file.
Every read first checks the chunk file's size against its header (a chunk truncated while mapped would
otherwise kill the run with SIGBUS) and then the row's crc32; a chunk that fails is reported and removed (the
slice's feature is computed by the model instead) and rebuilt at the next epoch. A cache that cannot be
written (read-only media or permissions) is read as it is: damaged chunks stay unread and slices not cached
are computed by SAM at every step.
Under torchrun rank 0 plans the missing chunks and each rank builds its share.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data

from util.checkpoint import atomic_write, is_temp_file
from util.disk import cannot_write, check_writable, human_bytes, no_space, writing
from util.mapped import MappedFiles
from util.parser_flags import has_option

CACHE_VERSION = 1
CHUNK_BYTES = 32 << 20              # at most this much feature data per chunk file (16 slices at S=1024)
DISK_MARGIN = 256 << 20             # left free on the disk after building
STALE_TMP_SECONDS = 3600            # temporary files older than this are leftovers of a killed build
STORAGE_DTYPES = ('float16', 'float32')
TORCH_DTYPES = {'float16': torch.float16, 'float32': torch.float32}
OPEN_CHUNKS = 64                    # chunk files each process keeps memory-mapped

SliceKey = tuple[str, str, int]     # (subject, plane, slice index)


def batch_features(feature: torch.Tensor, cached: torch.Tensor, images: torch.Tensor, encoder, to_device
                   ) -> torch.Tensor:
    """A batch's SAM features as the loader gives them (``feature`` (N, 256, S/16, S/16) from
    :meth:`CachedFeatures.read`, ``cached`` (N,) bool, both on the CPU) on the model's device (``to_device``), the
    slices the cache lacks filled in from ``encoder`` on ``images`` (N, C, H, W, on the device). ``cached`` is
    checked on the CPU, so a fully cached batch never waits for the GPU."""
    feature = to_device(feature).float()
    missing = ~cached
    if missing.any():
        missing = missing.to(feature.device)
        feature[missing] = encoder(images[missing]).to(feature)
    return feature


def add_sam_cache_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--sam_cache, --sam_cache_dtype, --sam_batch_size (adding twice is a no-op)."""
    if has_option(parser, '--sam_cache'):
        return parser
    parser.add_argument('--sam_cache', default='',
                        help='folder of the frozen-SAM feature cache (default: next to the slice store, '
                             '<dataroot>/.cache); "off" runs SAM at every step')
    parser.add_argument('--sam_cache_dtype', default='float16', choices=STORAGE_DTYPES,
                        help='storage of cached SAM features: float16 (half the disk; within 2^-11 relative, '
                             'exact for bf16 features) or float32 (exact)')
    parser.add_argument('--sam_batch_size', type=int, default=8,
                        help='slices per SAM call when building the feature cache')
    return parser


def _crc(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row).view(np.uint8)) & 0xffffffff


def _remove_chunk(stem: str) -> bool:
    """Remove a chunk's manifest (first: it is what makes a chunk visible) and data; absent files are fine.
    False when the cache cannot be written (read-only media or permissions): the chunk stays."""
    for ext in ('.json', '.npy'):
        try:
            os.remove(stem + ext)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not cannot_write(exc):
                raise
            return False
    return True


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk to build: consecutive slices of one subject and plane (``positions`` in the dataset)."""
    subject: str
    plane: str
    indices: tuple[int, ...]
    positions: tuple[int, ...]


class SamFeatureCache:
    """One cache folder ``<root>/sam_<digest>/`` for one set of settings (``identity``); see the module doc.

    ``shape`` is one feature's (256, S/16, S/16); ``dtype`` the storage dtype name.
    """

    def __init__(self, root: str, identity: dict, shape: tuple[int, int, int], dtype: str = 'float16'):
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f'--sam_cache_dtype must be one of {", ".join(STORAGE_DTYPES)}; got {dtype!r}')
        self.identity = {'version': CACHE_VERSION, **identity, 'dtype': dtype, 'shape': list(shape)}
        text = json.dumps(self.identity, sort_keys=True)
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.folder = os.path.join(os.path.abspath(root), f'sam_{self.digest}')
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def rows_per_chunk(self) -> int:
        return max(1, CHUNK_BYTES // self.row_bytes)

    def open(self) -> None:
        """Create the folder and its key.json; RuntimeError when the folder holds another key."""
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f'cannot create the SAM feature cache {self.folder} ({exc}); pass --sam_cache with a '
                               f'writable folder, or --sam_cache off') from None
        key_path = os.path.join(self.folder, 'key.json')
        if os.path.isfile(key_path):
            with open(key_path) as f:
                try:
                    found = json.load(f)
                except ValueError:
                    found = None
            if found == self.identity:
                return
            if found is not None:
                raise RuntimeError(f'SAM feature cache {self.folder}: its key.json describes other settings than this '
                                   f'run\'s ({found} vs {self.identity}); remove the folder')
        text = json.dumps(self.identity, indent=1, sort_keys=True).encode()
        atomic_write(lambda f: f.write(text), key_path)

    def writable(self) -> bool:
        """Whether chunks can be written into the (existing) cache folder; False for read-only media and missing
        permissions alike (util.disk.cannot_write)."""
        try:
            check_writable(self.folder, os.path.join(self.folder, 'a chunk'))
        except RuntimeError as exc:
            if not cannot_write(exc):
                raise
            return False
        return True

    # ------------------------------------------------------------------ index
    def scan(self, fingerprints: dict[str, str], prune: bool = False) -> dict[SliceKey, tuple[str, int, int]]:
        """The usable cached slices: (subject, plane, index) -> (chunk stem, row, crc32).

        Only chunks of the given subjects with their current fingerprint count. With ``prune``, chunks of
        a changed subject, damaged manifests and leftovers of killed builds are removed.
        """
        index: dict[SliceKey, tuple[str, int, int]] = {}
        now = time.time()
        for subject, fingerprint in fingerprints.items():
            folder = os.path.join(self.folder, subject)
            if not os.path.isdir(folder):
                continue
            for entry in sorted(os.listdir(folder)):
                path = os.path.join(folder, entry)
                if is_temp_file(entry) or entry.startswith('.tmp-'):   # (the latter: earlier versions' names)
                    try:
                        if prune and now - os.path.getmtime(path) > STALE_TMP_SECONDS:
                            os.remove(path)
                    except FileNotFoundError:       # renamed or removed by its writer meanwhile
                        pass
                    except OSError as exc:          # a read-only cache keeps its leftovers
                        if not cannot_write(exc):
                            raise
                    continue
                if not entry.endswith('.json'):
                    continue
                stem = path[:-5]
                try:
                    with open(path) as f:
                        meta = json.load(f)
                    ok = (meta['cache'] == self.digest and meta['subject'] == subject
                          and len(meta['indices']) == len(meta['crc32']))
                except (OSError, ValueError, KeyError, TypeError):
                    ok, meta = False, None
                if not ok or meta['fingerprint'] != fingerprint:
                    if prune:
                        _remove_chunk(stem)
                    continue
                for row, (i, crc) in enumerate(zip(meta['indices'], meta['crc32'])):
                    index.setdefault((subject, meta['plane'], int(i)), (stem, row, int(crc)))
        return index

    def plan(self, missing: list[tuple[int, SliceKey]]) -> list[ChunkPlan]:
        """Chunks for the missing slices ((dataset position, key), in dataset order): consecutive slices of one
        subject and plane, at most ``rows_per_chunk`` each."""
        groups: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for position, (subject, plane, index) in missing:
            groups[(subject, plane)].append((index, position))
        chunks = []
        for (subject, plane), rows in groups.items():
            rows.sort()
            for start in range(0, len(rows), self.rows_per_chunk):
                part = rows[start:start + self.rows_per_chunk]
                chunks.append(ChunkPlan(subject, plane, tuple(i for i, _ in part), tuple(p for _, p in part)))
        return chunks

    def write_chunk(self, chunk: ChunkPlan, fingerprint: str, features: np.ndarray) -> str:
        """Store ``features`` (n, *shape) of ``chunk`` atomically; returns the chunk's stem."""
        if features.shape != (len(chunk.indices), *self.shape) or features.dtype != self.dtype:
            raise ValueError(f'chunk {chunk.subject}/{chunk.plane}: features {features.shape} {features.dtype} do not '
                             f'fit the cache ({len(chunk.indices)}, {self.shape}, {self.dtype})')
        folder = os.path.join(self.folder, chunk.subject)
        with writing(folder):
            os.makedirs(folder, exist_ok=True)
        stem = os.path.join(folder, f'{chunk.plane}{chunk.indices[0]:04d}-{chunk.indices[-1]:04d}.'
                                    f'{secrets.token_hex(4)}')
        atomic_write(lambda f: np.save(f, features), stem + '.npy')
        meta = {'cache': self.digest, 'subject': chunk.subject, 'plane': chunk.plane, 'fingerprint': fingerprint,
                'indices': list(chunk.indices), 'crc32': [_crc(row) for row in features]}
        text = json.dumps(meta).encode()
        atomic_write(lambda f: f.write(text), stem + '.json')
        return stem


class CachedFeatures:
    """The read side, handed to the dataset by ``use_sam_features`` (and pickled to DataLoader workers):
    ``read(key)`` -> (feature (256, S/16, S/16) float16/32 tensor, True), or (zeros, False) when the slice is
    not cached or its chunk is damaged: it fails its checksum, or its file was truncated (checked before every
    read, so a chunk shortened while mapped is never touched past its end). A damaged chunk is reported and
    removed, and rebuilt at the next epoch; in a cache that cannot be written it stays, unread."""

    def __init__(self, index: dict[SliceKey, tuple[str, int, int]], shape: tuple[int, ...], dtype: np.dtype):
        self.index = index
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._maps = MappedFiles(OPEN_CHUNKS)
        self._bad: set[str] = set()
        self.rows = {}                                  # chunk stem -> rows its manifest lists
        for stem, row, _ in index.values():
            self.rows[stem] = max(self.rows.get(stem, 0), row + 1)

    def __len__(self) -> int:
        return len(self.index)

    def _chunk(self, stem: str) -> np.ndarray:
        data = self._maps.get(stem + '.npy')
        if data.ndim != 1 + len(self.shape) or data.shape[1:] != self.shape or data.dtype != self.dtype:
            raise ValueError(f'shape {data.shape} {data.dtype}')
        if len(data) < self.rows.get(stem, 0):
            raise ValueError(f'{len(data)} rows where the manifest lists {self.rows[stem]}')
        return data

    def read(self, key: SliceKey) -> tuple[torch.Tensor, bool]:
        where = self.index.get(key)
        if where is not None and where[0] not in self._bad:
            stem, row, crc = where
            try:
                feature = np.array(self._chunk(stem)[row])
            except (OSError, ValueError) as exc:
                feature, why = None, str(exc)
            else:
                why = 'checksum mismatch'
            if feature is not None and _crc(feature) == crc:
                return torch.from_numpy(feature), True
            self._quarantine(stem, why)
        return torch.zeros(self.shape, dtype=TORCH_DTYPES[self.dtype.name]), False

    def _quarantine(self, stem: str, why: str) -> None:
        self._bad.add(stem)
        self._maps.drop(stem + '.npy')
        if _remove_chunk(stem):
            fate = 'removed; its slices are computed by SAM now and the chunk is rebuilt at the next epoch'
        else:
            fate = (f'not removed ({os.path.dirname(stem)} cannot be written): its slices are computed by SAM at '
                    f'every step instead')
        print(f'WARNING: SAM feature cache chunk {stem}.npy is damaged ({why}): {fate}', file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- building and attaching

_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, flush=True)


def cache_disabled_reason(encoder, dataset, opt: argparse.Namespace) -> str | None:
    """Why this run reads no SAM feature cache (None: it does). Said once per process by :func:`prepare`.
    (The models that run an ``encoder`` add --sam_cache; a dataset with slice keys, --augment.)"""
    if encoder is None:
        return ''                                       # --no_sam: nothing to cache, nothing to say
    if str(opt.sam_cache).lower() in ('off', 'none'):
        return 'SAM feature cache off (--sam_cache off): SAM runs at every step'
    if encoder.finetune:
        return 'SAM feature cache off: --sam_finetune changes the SAM features at every step'
    if not hasattr(dataset, 'sam_cache_spec'):
        return f'SAM feature cache off: --dataset_mode {opt.dataset_mode} has no stable slice keys'
    if opt.isTrain and opt.augment:
        return ('SAM feature cache off: --augment changes every slice at every epoch, so its SAM feature cannot be '
                'reused')
    return None


def _used_positions(loader) -> list[int]:
    """Dataset positions the run uses (the --max_dataset_size sample, or all)."""
    subset = loader.dataloader.dataset
    if isinstance(subset, torch.utils.data.Subset):
        return [int(i) for i in subset.indices]
    return list(range(len(loader.dataset)))


def _check_disk(cache: SamFeatureCache, n_rows: int) -> str | None:
    need = n_rows * cache.row_bytes + 4096 * (1 + n_rows // cache.rows_per_chunk)
    free = shutil.disk_usage(cache.folder).free
    if need + DISK_MARGIN > free:
        return (f'SAM feature cache {cache.folder}: {n_rows} slices need {human_bytes(need)} but the disk has '
                f'{human_bytes(free)} free; free some space, pass --sam_cache DIR on a larger disk, a smaller '
                f'--sam_input_size, or --sam_cache off')
    return None


def build_chunks(cache: SamFeatureCache, chunks: list[ChunkPlan], dataset, fingerprints: dict[str, str], encoder,
                 batch_size: int, num_workers: int, show_progress: bool, field: str = 'A') -> None:
    """Compute and store ``chunks``: the dataset's ``field`` slices (``A`` input, ``B`` target) through
    ``encoder``, ``batch_size`` per call."""
    from tqdm import tqdm
    positions = [p for chunk in chunks for p in chunk.positions]
    if not positions:
        return
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, positions), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers,
                                         generator=torch.Generator())   # leaves the run's random state alone
    storage = TORCH_DTYPES[cache.dtype.name]
    pending, parts, n_pending = list(chunks), [], 0
    with tqdm(total=len(positions), desc='SAM features', unit='slice', disable=not show_progress,
              dynamic_ncols=True) as progress:
        for batch in loader:
            feature = encoder(batch[field].to(encoder.device)).to(storage)
            if not torch.isfinite(feature).all():
                raise RuntimeError(f'SAM features overflow {cache.dtype} (values beyond its range); use '
                                   f'--sam_cache_dtype float32')
            parts.append(feature.cpu().numpy())
            n_pending += len(feature)
            while pending and n_pending >= len(pending[0].indices):
                rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
                chunk = pending.pop(0)
                n = len(chunk.indices)
                cache.write_chunk(chunk, fingerprints[chunk.subject], np.ascontiguousarray(rows[:n]))
                parts, n_pending = ([rows[n:]] if len(rows) > n else []), n_pending - n
            progress.update(len(feature))


def prepare(encoder, loader, opt: argparse.Namespace, field: str = 'A') -> CachedFeatures | None:
    """Build what is missing of the SAM feature cache for ``loader``'s slices by running ``encoder`` on them, and
    hand the reader to the dataset: ``dataset.use_sam_features(field, reader)`` (None while building, or for good).

    ``field`` 'A' caches the input slices, 'B' the target slices for the SAM perceptual loss; their keys differ by
    modality (and 2.5D context).

    ``encoder``: the generator's frozen SamFeatureEncoder (None without SAM); ``loader``: a
    data.DatasetDataLoader. Call it before each pass over the data (cheap when the cache is complete). Under
    torchrun every rank must call it: rank 0 plans, each rank builds its share of the chunks. Returns the
    attached reader, or None when the cache does not apply (said once, with the reason).
    """
    dataset = loader.dataset
    dataset.use_sam_features(field, None)
    rank, world = getattr(opt, 'rank', 0), getattr(opt, 'world_size', 1)    # set by util.distributed.setup
    reason = cache_disabled_reason(encoder, dataset, opt)
    if reason is not None:
        if reason and rank == 0:
            _say_once(reason)
        return None
    spec = dataset.sam_cache_spec(field) if field != 'A' else dataset.sam_cache_spec()
    side = encoder.input_size // 16
    cache = SamFeatureCache(opt.sam_cache or spec['root'], {**encoder.cache_identity(), 'slices': spec['slices']},
                            (encoder.out_channels, side, side), opt.sam_cache_dtype)
    fingerprints = spec['subjects']
    positions = _used_positions(loader)
    distributed = world > 1 and dist.is_initialized()
    message = [None, None]                                  # [plan, error]
    if rank == 0:
        try:
            cache.open()
            index = cache.scan(fingerprints, prune=True)
            missing = [(p, key) for p in positions if (key := dataset.slice_key(p)) not in index]
            if missing and not cache.writable():
                _say_once(f'SAM feature cache {cache.folder} cannot be written (read-only or no permission): '
                          f'{len(missing)} of {len(positions)} slices are not cached and are computed by SAM at every '
                          f'step; pass --sam_cache with a writable folder to cache them')
                missing = []
            message = [cache.plan(missing), _check_disk(cache, len(missing)) if missing else None]
            if missing and not message[1]:
                print(f'SAM feature cache {cache.folder}: {len(positions) - len(missing)} of {len(positions)} slices '
                      f'cached; computing {len(missing)} ({human_bytes(len(missing) * cache.row_bytes)} on disk, '
                      f'{human_bytes(shutil.disk_usage(cache.folder).free)} free, {opt.sam_batch_size} per SAM call)',
                      flush=True)
        except (OSError, RuntimeError) as exc:
            hint = ('; pass --sam_cache with a writable folder, or --sam_cache off' if cannot_write(exc) or
                    no_space(exc) else '')
            message = [None, f'{exc}{hint}']
    if distributed:
        dist.broadcast_object_list(message, src=0)
    chunks, error = message
    if error:
        raise RuntimeError(error)
    if chunks:
        build_chunks(cache, chunks[rank::world], dataset, fingerprints, encoder, opt.sam_batch_size,
                     int(opt.num_threads), show_progress=rank == 0, field=field)
    if distributed:
        dist.barrier()
    reader = CachedFeatures(cache.scan(fingerprints), cache.shape, cache.dtype)
    if rank == 0:
        _say_once(f'SAM feature cache: {cache.folder} ({len(reader)} slices, {cache.dtype.name})')
    dataset.use_sam_features(field, reader)
    if chunks and hasattr(loader, 'restart_workers'):
        loader.restart_workers()        # persistent workers hold the dataset as it was: let them read the new chunks
    return reader
