"""Small helpers shared by the whole toolkit: image I/O with full precision, tensors to images, folders, file hashes."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from util.checkpoint import atomic_write

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.npy')


# file types whose extension output_name() removes: the 2D images and the volume formats
FILE_EXTENSIONS = IMG_EXTENSIONS + ('.nii.gz', '.nii', '.mha', '.mhd', '.nrrd', '.nhdr', '.dcm')


def output_name(source: str) -> str:
    """The name results of ``source`` (a file path or an item name) are saved under: its last path component
    without a known file-type extension. Other dots are kept: ``pat.1_x010`` and DICOM-style UIDs such as
    ``1.2.840.10008.1`` stay whole, ``scan.v2.png`` gives ``scan.v2``."""
    name = os.path.basename(str(source).rstrip('/\\'))
    for ext in FILE_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[:-len(ext)]
    return name


def check_unique_names(sources) -> dict[str, str]:
    """output name -> source for every source; ValueError naming both sources when two different sources
    would be saved under the same name (their results would overwrite each other)."""
    names: dict[str, str] = {}
    for source in sources:
        name = output_name(source)
        if names.setdefault(name, str(source)) != str(source):
            raise ValueError(f'{names[name]} and {source} would both be saved as "{name}": rename one of them '
                             f'(results are named after the input file without its extension)')
    return names


def is_image_file(filename: str) -> bool:
    """True for the file types the 2D datasets read (8/16-bit PNG, JPEG, TIFF, float .npy)."""
    return filename.lower().endswith(IMG_EXTENSIONS)


def list_images(folder: str, max_dataset_size: float = float('inf')) -> list[str]:
    """Sorted paths of all image files below ``folder``; raises if the folder is missing or holds none."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{folder} is not a directory (check --dataroot and --phase)')
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files if is_image_file(f))
    if not paths:
        raise FileNotFoundError(f'{folder} holds no images (supported: {", ".join(IMG_EXTENSIONS)})')
    return paths[:int(min(max_dataset_size, len(paths)))]


def read_picture(path: str) -> np.ndarray:
    """A 2D picture of the classic 2D datasets (PNG, JPEG, BMP, PPM/PGM, TIFF, .npy) at full precision, as float32
    scaled to [0, 1] (float .npy/.tif data is returned as is). Volumes (NIfTI, MetaImage, NRRD, DICOM) are
    util.image_io.read_image's.

    Returns an array of shape (H, W) for grayscale or (H, W, C) for colour. 8-bit files are divided by 255,
    16-bit files by 65535, so no precision is lost. Raises ValueError naming the file when it cannot be read.
    """
    try:
        if path.lower().endswith('.npy'):
            arr = np.load(path, allow_pickle=False)
        elif path.lower().endswith(('.tif', '.tiff')):
            arr = tifffile.imread(path)
        else:
            with Image.open(path) as im:
                if im.mode == 'P':
                    im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
                arr = np.asarray(im)
    except Exception as exc:  # PIL, tifffile and numpy raise many kinds
        raise ValueError(f'cannot read image {path}: {exc}') from exc
    if arr.ndim == 3 and arr.shape[2] == 4:  # drop alpha
        arr = arr[..., :3]
    if arr.ndim not in (2, 3):
        raise ValueError(f'cannot read image {path}: expected a 2D image, got an array of shape {arr.shape}')
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype in (np.uint16, np.int32):  # 16-bit PNG/TIFF (PIL reads some as int32)
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    return arr.astype(np.float32)


def image_to_tensor(arr: np.ndarray, channels: int, path: str = '') -> torch.Tensor:
    """(H, W) or (H, W, C) float array in [0, 1] -> FloatTensor (channels, H, W) in [-1, 1].

    Grayscale is repeated to 3 channels when ``channels`` is 3 (SAM and RGB models want 3), and an RGB
    file whose channels are equal is read as grayscale; any other mismatch is an error naming the file.
    """
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    if c != channels:
        if c == 1 and channels == 3:
            arr = np.repeat(arr, 3, axis=2)
        elif c == 3 and channels == 1 and np.allclose(arr[..., :1], arr[..., 1:], atol=1 / 255):
            arr = arr[..., :1]  # a grayscale image stored as RGB
        else:
            raise ValueError(f'{path}: image has {c} channels but the model expects {channels} '
                             f'(set --input_nc/--output_nc to match the data)')
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))) * 2.0 - 1.0


def tensor2im(t: torch.Tensor) -> np.ndarray:
    """Tensor (C, H, W) or (N, C, H, W) (first item used) in [-1, 1] -> uint8 image.

    One channel gives (H, W), three give (H, W, 3); values outside [-1, 1] are clipped.
    """
    if t.dim() == 4:
        t = t[0]
    arr = t.detach().float().cpu().clamp(-1, 1).numpy()
    arr = np.round((arr + 1.0) * 127.5).astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else arr[:3].transpose(1, 2, 0)


def save_image(image_numpy: np.ndarray, path: str, aspect_ratio: float = 1.0) -> None:
    """Save a uint8 (H, W) or (H, W, 3) array as an image; a 2D array gives a 1-channel file.

    ``aspect_ratio`` > 1 stretches the width, < 1 the height (bicubic), as in the classic toolkit.
    """
    image = Image.fromarray(image_numpy)
    h, w = image_numpy.shape[:2]
    if aspect_ratio > 1.0:
        image = image.resize((int(w * aspect_ratio), h), Image.BICUBIC)
    elif aspect_ratio < 1.0:
        image = image.resize((w, int(h / aspect_ratio)), Image.BICUBIC)
    file_format = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    atomic_write(lambda f: image.save(f, format=file_format), path)


def save_raw(array: np.ndarray, path_without_ext: str) -> None:
    """Save float data without loss as ``<path>.npy`` and ``<path>.tif`` (float32), each written atomically."""
    data = np.asarray(array, dtype=np.float32)
    atomic_write(lambda f: np.save(f, data), path_without_ext + '.npy')
    tiff = io.BytesIO()             # tifffile needs a named file or a buffer, not the temporary file's descriptor
    tifffile.imwrite(tiff, data, photometric='rgb' if data.ndim == 3 and data.shape[-1] == 3 else 'minisblack')
    atomic_write(lambda f: f.write(tiff.getvalue()), path_without_ext + '.tif')


def mkdir(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)


def mkdirs(paths: str | list[str]) -> None:
    for p in [paths] if isinstance(paths, str) else paths:
        mkdir(p)


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_version(path: str) -> tuple[str, int, int]:
    """(real path, size, modification time in ns) of a file: what a cache of something read from it is keyed by
    (a rewritten file, atomically renamed into place, has another). FileNotFoundError when there is none."""
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks; computed once per :func:`file_version`."""
    key = file_version(path)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]
