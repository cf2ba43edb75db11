"""One set of images in one direction: ``--dataroot`` itself holds the images (``--model test``)."""
from __future__ import annotations

from util.util import list_images
from .base_dataset import BaseDataset, load_tensor, transform


class SingleDataset(BaseDataset):
    """Items ``{'A', 'A_paths'}`` from every image below ``--dataroot``."""

    def __init__(self, opt):
        super().__init__(opt)
        if not opt.dataroot:
            raise ValueError('--dataroot is required for --dataset_mode single')
        self.A_paths = list_images(opt.dataroot, opt.max_dataset_size)
        self.input_nc = opt.output_nc if opt.direction == 'BtoA' else opt.input_nc

    def __getitem__(self, index: int) -> dict:
        path = self.A_paths[index]
        return {'A': transform(self.opt, load_tensor(path, self.input_nc)), 'A_paths': path}

    def __len__(self) -> int:
        return len(self.A_paths)

    def item_sources(self) -> list[str]:
        return self.A_paths
