"""Unpaired images: ``DIR/<phase>A`` and ``DIR/<phase>B``, matched at random (CycleGAN)."""
from __future__ import annotations

import random

from util.util import list_images
from .base_dataset import BaseDataset, load_tensor, require_dir, transform


class UnalignedDataset(BaseDataset):
    """Item i pairs A[i] with B[i] in serial mode, with a random B otherwise."""

    def __init__(self, opt):
        super().__init__(opt)
        self.dir_A, self.dir_B = require_dir(opt, opt.phase + 'A', opt.phase + 'B')
        self.A_paths = list_images(self.dir_A, opt.max_dataset_size)
        self.B_paths = list_images(self.dir_B, opt.max_dataset_size)
        btoa = opt.direction == 'BtoA'
        self.input_nc = opt.output_nc if btoa else opt.input_nc
        self.output_nc = opt.input_nc if btoa else opt.output_nc

    def __getitem__(self, index: int) -> dict:
        A_path = self.A_paths[index % len(self.A_paths)]
        if self.opt.serial_batches:
            B_path = self.B_paths[index % len(self.B_paths)]
        else:
            B_path = self.B_paths[random.randint(0, len(self.B_paths) - 1)]
        A = transform(self.opt, load_tensor(A_path, self.input_nc))
        B = transform(self.opt, load_tensor(B_path, self.output_nc))
        return {'A': A, 'B': B, 'A_paths': A_path, 'B_paths': B_path}

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def item_sources(self) -> list[str]:
        return self.A_paths
