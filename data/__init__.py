"""Datasets, found by name: ``--dataset_mode X`` imports ``data/X_dataset.py`` and uses its class
``XDataset`` (a subclass of BaseDataset). A new dataset is one new file; see ``template_dataset.py``."""
from __future__ import annotations

import sys

import torch
import torch.utils.data

from util.registry import available, find_class
from util.seed import worker_init_fn


def available_datasets() -> list[str]:
    return available(sys.modules[__name__], '_dataset')


def find_dataset_using_name(dataset_name: str):
    from .base_dataset import BaseDataset
    return find_class(sys.modules[__name__], dataset_name, '_dataset', BaseDataset, '--dataset_mode')


def get_option_setter(dataset_name: str):
    return find_dataset_using_name(dataset_name).modify_commandline_options


def create_dataset(opt) -> 'DatasetDataLoader':
    """Build the dataset named by ``opt.dataset_mode`` wrapped in a seeded (and, under torchrun, sharded) loader."""
    return DatasetDataLoader(opt)


class DatasetDataLoader:
    """A DataLoader over the chosen dataset, capped at ``--max_dataset_size``, with a reproducible order.

    The order comes from a DistributedSampler (one shard per process under torchrun, the whole set
    otherwise) seeded with ``--seed``; :meth:`set_epoch` gives every epoch its own order and can skip
    the batches a resumed run has already seen. Worker seeds come from a generator reseeded per epoch,
    so augmentation is reproducible too.
    """

    def __init__(self, opt):
        self.opt = opt
        self.dataset = find_dataset_using_name(opt.dataset_mode)(opt)
        if getattr(opt, 'rank', 0) == 0:
            print(f'dataset [{type(self.dataset).__name__}] was created with {len(self.dataset)} items')
        subset = self.dataset
        if len(self.dataset) > opt.max_dataset_size:
            # training: a seeded random sample (slices of a volume come in order, the first N would be one
            # subject's); serial runs (test): the first N, as in the classic toolkit
            keep = int(opt.max_dataset_size)
            indices = range(keep) if opt.serial_batches else \
                torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(opt.seed))[:keep].sort()[0].tolist()
            subset = torch.utils.data.Subset(self.dataset, indices)
        self.sampler = torch.utils.data.DistributedSampler(
            subset, num_replicas=getattr(opt, 'world_size', 1), rank=getattr(opt, 'rank', 0),
            shuffle=not opt.serial_batches, seed=opt.seed)
        self.skipping = _SkipSampler(self.sampler)
        self.generator = torch.Generator()
        self.dataloader = torch.utils.data.DataLoader(
            subset, batch_size=opt.batch_size, sampler=self.skipping, num_workers=int(opt.num_threads),
            worker_init_fn=worker_init_fn, generator=self.generator)
        self.set_epoch(getattr(opt, 'epoch_count', 1))

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Use the order of ``epoch`` and start after its first ``skip_batches`` batches."""
        self.sampler.set_epoch(epoch)
        self.skipping.skip = skip_batches * self.opt.batch_size
        self.generator.manual_seed(self.opt.seed + 100003 * epoch + getattr(self.opt, 'rank', 0))

    def __len__(self) -> int:
        """Number of items this process sees in a full epoch."""
        return len(self.sampler)

    def __iter__(self):
        return iter(self.dataloader)


class _SkipSampler(torch.utils.data.Sampler):
    """The indices of ``sampler`` after the first ``skip`` (to resume inside an epoch)."""

    def __init__(self, sampler: torch.utils.data.Sampler):
        self.sampler = sampler
        self.skip = 0

    def __iter__(self):
        return (i for n, i in enumerate(self.sampler) if n >= self.skip)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)
