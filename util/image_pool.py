"""A buffer of previously generated images for the discriminator (Shrivastava et al. 2017), as in CycleGAN."""
from __future__ import annotations

import random

import torch


class ImagePool:
    """Holds up to ``pool_size`` generated images; ``query`` returns a batch mixing new and stored ones.

    With ``pool_size`` 0 the pool is off and ``query`` returns its input. The pool is part of the training
    state: ``state_dict``/``load_state_dict`` let a resumed run continue with the same buffer.
    """

    def __init__(self, pool_size: int):
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, C, H, W). Each is returned as is, or (probability 1/2 once the pool is full) swapped
        for a random stored image, which it then replaces."""
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.pool_size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {'pool_size': self.pool_size, 'images': [im.cpu() for im in self.images]}

    def load_state_dict(self, state: dict, device: torch.device | str = 'cpu') -> None:
        self.pool_size = state['pool_size']
        self.images = [im.to(device) for im in state['images']]
