"""The slice store: each subject read, checked, reoriented to RAS and normalised to [-1, 1] once, then reused.

``<cache_dir>/triplanar_<key>/<subject>/`` holds ``volumes.npy``, the canonical (X, Y, Z, 3) array of modality A,
modality B and the body mask (0/1), interleaved so that one strided read gives all three slices, and ``meta.json``
(source files by name, size and mtime; geometry; intensity maps; body fraction of every slice). ``<key>`` hashes
everything the arrays depend on (:class:`StoreSettings`), so other settings get another folder; a subject whose
source files changed, or whose store is damaged or truncated, is stored anew.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from data.layouts import MASK_NAME, describe_candidates, find_modality
from util.body_mask import body_mask
from util.disk import writing
from util.geometry import Geometry
from util.image_io import read_image
from util.intensity import IntensityMap, intensity_map, modality_kind
from util.mapped import check_whole
from util.mask_file import read_mask_on_grid
from util.slicing import PLANES
from util.whole_folder import whole_folder

STORE_VERSION = 4                   # 4: body masks join tissue parts closer than 4 voxels (thin volumes)
STORE_FILE = 'volumes.npy'


@dataclass(frozen=True)
class StoreSettings:
    """Everything the stored arrays depend on; its hash names the store folder."""
    modalities: tuple[str, str]                 # (modality_A, modality_B), as on the command line
    ct_window: tuple[float, float]
    mr_percentiles: tuple[float, float]
    dtype: str
    affine_tol: float

    def key(self) -> str:
        text = json.dumps({'version': STORE_VERSION, **self.__dict__}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class Subject:
    """One stored subject: source files, geometry, intensity maps and body fraction per slice."""
    name: str
    paths: dict[str, str]                       # modality -> source file (or DICOM folder)
    mask_path: str | None
    geometry: Geometry                          # shared by all modalities
    maps: dict[str, IntensityMap]               # modality -> map to [-1, 1]
    foreground: dict[str, list[float]]          # plane -> body fraction of each slice
    store: str                                  # folder of volumes.npy (canonical RAS) and meta.json

    def to_json(self) -> dict:
        """What meta.json keeps; source files by name and (size, mtime), so the store survives a different
        spelling of --dataroot but not a changed file."""
        return {'version': STORE_VERSION, 'name': self.name, 'sources': _sources(self.paths, self.mask_path),
                'geometry': self.geometry.to_json(), 'maps': {m: [v.low, v.high] for m, v in self.maps.items()},
                'foreground': self.foreground}

    @classmethod
    def from_json(cls, d: dict, paths: dict[str, str], mask_path: str | None, store: str) -> 'Subject':
        return cls(d['name'], paths, mask_path, Geometry.from_json(d['geometry']),
                   {m: IntensityMap(*v) for m, v in d['maps'].items()}, d['foreground'], store)


def _sources(paths: dict[str, str], mask_path: str | None) -> list:
    """[file name, size, mtime] of each source file (modalities, then the mask or None)."""
    return [None if p is None else [os.path.basename(p), os.stat(p).st_size, os.stat(p).st_mtime_ns]
            for p in (*paths.values(), mask_path)]


def subject_sources(root: str, name: str, modalities: tuple[str, str]) -> tuple[dict[str, str], str | None]:
    """The file (or DICOM folder) of each modality and of the optional mask; FileNotFoundError names a missing
    modality."""
    folder = os.path.join(root, name)
    paths = {}
    for m in modalities:
        path = find_modality(folder, name, m)
        if path is None:
            raise FileNotFoundError(f'{folder}: modality "{m}" is missing (looked for '
                                    f'{describe_candidates(folder, name, m)})')
        paths[m] = path
    return paths, find_modality(folder, name, MASK_NAME)


def build_subject(root: str, name: str, settings: StoreSettings, store: str) -> Subject:
    """Read, check, normalise and store one subject (written to a temporary folder, then renamed)."""
    paths, mask_path = subject_sources(root, name, settings.modalities)
    print(f'slice store: adding {name}', flush=True)
    volumes = {m: read_image(p) for m, p in paths.items()}
    (ref, (_, ref_img)), *others = volumes.items()
    geometry = Geometry.of(ref_img)
    for m, (_, img) in others:
        why = geometry.mismatch(Geometry.of(img), settings.affine_tol)
        if why:
            raise ValueError(f'subject {name} refused: {paths[ref]} (shape {geometry.shape}) and {paths[m]} '
                             f'(shape {tuple(img.shape[:3])}) are not on the same voxel grid: {why}')
    canonical = {m: geometry.to_canonical(data) for m, (data, _) in volumes.items()}
    del volumes
    if mask_path:
        mask = geometry.to_canonical(read_mask_on_grid(
            mask_path, geometry, settings.affine_tol,
            lambda why: f'subject {name} refused: mask {mask_path} does not match {paths[ref]}: {why}'))
        if not mask.any():
            raise ValueError(f'{mask_path}: the body mask is empty')
    else:
        mask = body_mask([(data, modality_kind(m)) for m, data in canonical.items()], f'subject {name}')
        if not mask.any():
            raise ValueError(f'subject {name}: no body found in {", ".join(paths.values())}')
    maps = {m: intensity_map(modality_kind(m), data, mask, paths[m], settings.ct_window, settings.mr_percentiles)
            for m, data in canonical.items()}
    foreground = {p: mask.mean(axis=tuple(a for a in range(3) if a != ax)).round(6).tolist()
                  for p, ax in PLANES.items()}
    subject = Subject(name, paths, mask_path, geometry, maps, foreground, store)
    # written whole (util/whole_folder.py): a full or read-only disk is one line, a kill leaves the old store or
    # none, and a killed build's temporary folder is removed by the next build; another process that stored the
    # subject meanwhile (torchrun ranks) is replaced by the same content
    with writing(os.path.join(store, STORE_FILE)), whole_folder(store) as tmp:
        channels = [maps[m].normalise(canonical[m]) for m in settings.modalities]
        np.save(os.path.join(tmp, STORE_FILE), np.stack([*channels, mask], axis=-1).astype(settings.dtype))
        with open(os.path.join(tmp, 'meta.json'), 'w') as f:
            json.dump(subject.to_json(), f)
    return subject


def store_is_whole(store: str) -> bool:
    """Whether the store's volumes.npy is there and as long as its header says (not truncated)."""
    path = os.path.join(store, STORE_FILE)
    try:
        check_whole(path, np.load(path, mmap_mode='r'))
    except (OSError, ValueError):
        return False
    return True


def load_subject(root: str, name: str, settings: StoreSettings, store: str) -> Subject:
    """The stored subject when its store is complete and its sources unchanged, else a freshly built one."""
    meta_path = os.path.join(store, 'meta.json')
    if os.path.isfile(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except ValueError:          # damaged: store again
            meta = {}
        paths, mask_path = subject_sources(root, name, settings.modalities)
        if (meta.get('version') == STORE_VERSION and meta.get('sources') == _sources(paths, mask_path)
                and store_is_whole(store)):
            return Subject.from_json(meta, paths, mask_path, store)
    return build_subject(root, name, settings, store)
