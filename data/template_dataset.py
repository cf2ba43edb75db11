"""A starting point for a new dataset: copy this file to ``data/<mode>_dataset.py``, rename the class to
``<Mode>Dataset`` and fill in the three methods; ``--dataset_mode <mode>`` then finds it. This template is a
working dataset: pairs ``DIR/<phase>/A/<x>`` with ``DIR/<phase>/B/<x>`` (same file name in both folders)."""
from __future__ import annotations

import os

from util.util import list_images
from .base_dataset import BaseDataset, get_params, load_tensor, require_dir, transform


class TemplateDataset(BaseDataset):
    """Items {'A', 'B': (C, H, W) in [-1, 1], 'A_paths', 'B_paths'} from two folders of same-named files."""

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add flags and change defaults of this dataset."""
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.dir_A, self.dir_B = require_dir(opt, os.path.join(opt.phase, 'A'), os.path.join(opt.phase, 'B'))
        self.A_paths = list_images(self.dir_A, opt.max_dataset_size)
        missing = [p for p in self.A_paths if not os.path.exists(self._b_path(p))]
        if missing:
            raise FileNotFoundError(f'{self._b_path(missing[0])} is missing: every A image needs a B image '
                                    f'with the same name ({len(missing)} missing)')

    def _b_path(self, a_path: str) -> str:
        return os.path.join(self.dir_B, os.path.relpath(a_path, self.dir_A))

    def __getitem__(self, index: int) -> dict:
        a_path = self.A_paths[index]
        b_path = self._b_path(a_path)
        nc_a, nc_b = (self.opt.input_nc, self.opt.output_nc) if self.opt.direction == 'AtoB' \
            else (self.opt.output_nc, self.opt.input_nc)
        A, B = load_tensor(a_path, nc_a), load_tensor(b_path, nc_b)
        params = get_params(self.opt, tuple(A.shape[-2:]))
        A, B = transform(self.opt, A, params), transform(self.opt, B, params)
        if self.opt.direction == 'BtoA':
            A, B, a_path, b_path = B, A, b_path, a_path
        return {'A': A, 'B': B, 'A_paths': a_path, 'B_paths': b_path}

    def __len__(self) -> int:
        return len(self.A_paths)
