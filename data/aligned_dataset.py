"""Paired images stored side by side: ``DIR/<phase>/xxx.png`` holds A|B (A left, B right)."""
from __future__ import annotations

from util.util import image_to_tensor, list_images, read_picture
from .base_dataset import BaseDataset, get_params, require_dir, transform


class AlignedDataset(BaseDataset):
    """Each file is one pair, A and B concatenated along the width; ``--direction BtoA`` swaps them."""

    def __init__(self, opt):
        super().__init__(opt)
        (self.dir_AB,) = require_dir(opt, opt.phase)
        self.AB_paths = list_images(self.dir_AB, opt.max_dataset_size)
        if opt.load_size < opt.crop_size:
            raise ValueError(f'--load_size {opt.load_size} must be >= --crop_size {opt.crop_size}')

    def __getitem__(self, index: int) -> dict:
        path = self.AB_paths[index]
        a_nc, b_nc = (self.opt.input_nc, self.opt.output_nc) if self.opt.direction == 'AtoB' \
            else (self.opt.output_nc, self.opt.input_nc)
        arr = read_picture(path)
        w2 = arr.shape[1] // 2
        A = image_to_tensor(arr[:, :w2], a_nc, path)
        B = image_to_tensor(arr[:, w2:2 * w2], b_nc, path)
        params = get_params(self.opt, tuple(A.shape[-2:]))
        A, B = transform(self.opt, A, params), transform(self.opt, B, params)
        if self.opt.direction == 'BtoA':
            A, B = B, A
        return {'A': A, 'B': B, 'A_paths': path, 'B_paths': path}

    def __len__(self) -> int:
        return len(self.AB_paths)

    def item_sources(self) -> list[str]:
        return self.AB_paths

