"""Datasets, found by name: ``--dataset_mode X`` imports ``data/X_dataset.py`` and uses its class
``XDataset`` (a subclass of BaseDataset). A new dataset is one new file; see ``template_dataset.py``."""
from __future__ import annotations

import multiprocessing
import sys

import torch
import torch.utils.data

from util.registry import available, find_class
from util.seed import worker_init_fn

PREFETCH = 4        # batches each data-loader worker keeps ready


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

    To keep a GPU fed: workers (``--num_threads``) are persistent, each with PREFETCH batches in flight, and
    batches come in pinned memory when the run uses CUDA (the model copies them without waiting). Persistent
    workers are reseeded at the first item of every pass exactly as fresh workers would be seeded, so the batches
    are those of a loader that starts new workers for every pass (a resumed run gets the same ones too).
    :meth:`restart_workers` makes them pick up a changed dataset (a rebuilt SAM feature cache).
    """

    def __init__(self, opt):
        self.opt = opt
        # process rank, world size and device: set by util.distributed.setup, absent when options are parsed
        # without setting up devices (a dataset made on its own)
        self.rank = getattr(opt, 'rank', 0)
        self.dataset = find_dataset_using_name(opt.dataset_mode)(opt)
        if self.rank == 0:
            print(f'dataset [{type(self.dataset).__name__}] was created with {len(self.dataset)} items')
        subset = self.dataset
        if len(self.dataset) > opt.max_dataset_size:
            # training: a seeded random sample (slices of a volume come in order, the first N would be one
            # subject's); serial runs (test): the first N, as in the classic toolkit
            keep = int(opt.max_dataset_size)
            order = torch.Generator().manual_seed(opt.seed)
            indices = range(keep) if opt.serial_batches else \
                torch.randperm(len(self.dataset), generator=order)[:keep].sort()[0].tolist()
            subset = torch.utils.data.Subset(self.dataset, indices)
        self.sampler = torch.utils.data.DistributedSampler(
            subset, num_replicas=getattr(opt, 'world_size', 1), rank=self.rank,
            shuffle=not opt.serial_batches, seed=opt.seed)
        self.skipping = _SkipSampler(self.sampler)
        self.generator = torch.Generator()
        workers = int(opt.num_threads)
        self.subset = _EpochSeeded(subset) if workers > 0 else subset
        self.loader_args = dict(batch_size=opt.batch_size, sampler=self.skipping, num_workers=workers,
                                worker_init_fn=worker_init_fn, generator=self.generator,
                                pin_memory=getattr(opt, 'device', torch.device('cpu')).type == 'cuda')
        if workers > 0:
            self.loader_args.update(persistent_workers=True, prefetch_factor=PREFETCH)
        self.restart_workers()
        self.set_epoch(getattr(opt, 'epoch_count', 1))

    def restart_workers(self) -> None:
        """A new DataLoader: its workers (started at the next pass) see the dataset as it is now."""
        self.dataloader = torch.utils.data.DataLoader(self.subset, **self.loader_args)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Use the order of ``epoch`` and start after its first ``skip_batches`` batches."""
        self.sampler.set_epoch(epoch)
        self.skipping.skip = skip_batches * self.opt.batch_size
        self.generator.manual_seed(self.opt.seed + 100003 * epoch + self.rank)

    def __len__(self) -> int:
        """Number of items this process sees in a full epoch."""
        return len(self.sampler)

    def __iter__(self):
        if not isinstance(self.subset, _EpochSeeded):
            return iter(self.dataloader)
        # the base seed a fresh worker pool would draw from the generator (torch's DataLoader iterator makes exactly
        # this one draw when it starts workers), for the persistent workers to reseed from at this pass
        state = self.generator.get_state()
        self.subset.base_seed.value = _draw_seed(self.generator)
        self.subset.generation.value += 1
        passes = iter(self.dataloader)           # its first pass starts the workers, and draws a seed of its own
        self.generator.set_state(state)
        _draw_seed(self.generator)               # so the generator moves by one draw per pass, as before
        return passes


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


class _EpochSeeded(torch.utils.data.Subset):
    """The run's dataset (or its --max_dataset_size sample) for persistent workers: at its first item of each pass
    over the data a worker reseeds torch, python and numpy as torch seeds a fresh worker (base seed + worker id,
    then util.seed.worker_init_fn), from the pass's base seed and number shared by the main process."""

    def __init__(self, data: torch.utils.data.Dataset):
        if isinstance(data, torch.utils.data.Subset):
            super().__init__(data.dataset, data.indices)
        else:
            super().__init__(data, range(len(data)))
        self.base_seed = multiprocessing.Value('q', 0, lock=False)
        self.generation = multiprocessing.Value('q', 0, lock=False)
        self._seeded_generation = -1

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        if info is not None and self._seeded_generation != self.generation.value:
            self._seeded_generation = self.generation.value
            torch.manual_seed(self.base_seed.value + info.id)
            worker_init_fn(info.id)
        return super().__getitem__(index)

    def __getitems__(self, indices: list[int]) -> list:
        return [self[i] for i in indices]


class _SkipSampler(torch.utils.data.Sampler):
    """The indices of ``sampler`` after the first ``skip`` (to resume inside an epoch)."""

    def __init__(self, sampler: torch.utils.data.Sampler):
        self.sampler = sampler
        self.skip = 0

    def __iter__(self):
        return (i for n, i in enumerate(self.sampler) if n >= self.skip)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)
