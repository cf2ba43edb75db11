"""The dataset base class and the classic 2D preprocessing (resize, crop, flip) done on float tensors,
so 16-bit and float inputs keep their precision."""
from __future__ import annotations

import argparse
import os
import random
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
import torch.utils.data

from util.util import image_to_tensor, read_picture


class BaseDataset(torch.utils.data.Dataset, ABC):
    """Subclasses implement ``__len__`` and ``__getitem__`` returning at least
    ``{'A': FloatTensor (C, H, W) in [-1, 1], 'A_paths': str}`` (paired sets also 'B', 'B_paths')."""

    volumetric = False    # True: items are slices of volumes that evaluation/ puts back together and scores per volume

    def __init__(self, opt: argparse.Namespace):
        self.opt = opt
        self.root = opt.dataroot

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        """Add dataset-specific flags or change defaults."""
        return parser

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> dict: ...

    def item_sources(self) -> list[str] | None:
        """The input each item's results are named after (see :func:`util.util.output_name`), in item order, when
        known without reading the items; test.py checks them for clashing names before it starts."""
        return None

    def use_sam_features(self, field: str, reader) -> None:
        """The cached SAM features of the items' ``field`` slices (data/sam_cache.py), or none with None. Only a
        dataset with stable slice keys (``sam_cache_spec``, ``slice_key``: TriplanarAlignedDataset) reads them; the
        others take None alone."""
        if reader is not None:
            raise TypeError(f'{type(self).__name__} cannot read cached SAM features: it has no stable slice keys')


def require_dir(opt: argparse.Namespace, *subdirs: str) -> list[str]:
    """``opt.dataroot/<subdir>`` for each subdir; one clear error when dataroot or a folder is missing."""
    if not opt.dataroot:
        raise ValueError(f'--dataroot is required for --dataset_mode {opt.dataset_mode}')
    dirs = [os.path.join(opt.dataroot, d) for d in subdirs]
    for d in dirs:
        if not os.path.isdir(d):
            raise FileNotFoundError(f'{d} does not exist (--dataroot {opt.dataroot}, --phase {opt.phase}, '
                                    f'--dataset_mode {opt.dataset_mode})')
    return dirs


def load_tensor(path: str, channels: int) -> torch.Tensor:
    """Read an image file as FloatTensor (channels, H, W) in [-1, 1] at full precision."""
    return image_to_tensor(read_picture(path), channels, path)


def get_params(opt: argparse.Namespace, size: tuple[int, int]) -> dict:
    """Random choices shared by A and B of a pair: crop position and flip. ``size`` is (H, W)."""
    h, w = size
    new_h, new_w = h, w
    if opt.preprocess == 'resize_and_crop':
        new_h = new_w = opt.load_size
    elif opt.preprocess == 'scale_width_and_crop':
        new_w, new_h = opt.load_size, opt.load_size * h // w
    x = random.randint(0, max(0, new_w - opt.crop_size))
    y = random.randint(0, max(0, new_h - opt.crop_size))
    return {'crop_pos': (x, y), 'flip': random.random() > 0.5}


def transform(opt: argparse.Namespace, img: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """Apply ``--preprocess`` and flipping to a (C, H, W) tensor. ``params=None`` draws fresh random ones."""
    params = params or get_params(opt, tuple(img.shape[-2:]))
    mode = opt.preprocess
    if 'resize' in mode:
        img = _resize(img, opt.load_size, opt.load_size)
    elif 'scale_width' in mode:
        h, w = img.shape[-2:]
        target = opt.crop_size if mode == 'scale_width' else opt.load_size
        img = _resize(img, max(target * h // w, opt.crop_size if 'crop' in mode else 1), target)
    if 'crop' in mode:
        x, y = params['crop_pos']
        img = img[:, y:y + opt.crop_size, x:x + opt.crop_size]
    if mode == 'none':
        img = _resize(img, _round4(img.shape[-2]), _round4(img.shape[-1]))
    if opt.isTrain and not opt.no_flip and params['flip']:
        img = img.flip(-1)
    return img


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(img.shape[-2:]) == (h, w):
        return img
    return F.interpolate(img[None], size=(h, w), mode='bicubic', align_corners=False, antialias=True)[0].clamp(-1, 1)


def _round4(n: int) -> int:
    """Sizes must be multiples of 4 for the generators; the classic toolkit rounds the same way."""
    return max(4, int(round(n / 4)) * 4)
