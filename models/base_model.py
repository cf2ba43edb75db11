"""The model base class: devices and DDP, schedulers, saving and loading networks and the full
training state, visuals and losses. Subclasses define the networks, losses and one optimisation step."""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import time
from abc import ABC, abstractmethod
from collections import OrderedDict

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from util import seed
from util.checkpoint import describe_stamp, journal_path, network_file, plain_options, recover, safe_load, \
    save_stamp, save_together, unpack_network_file
from util.image_pool import ImagePool
from . import networks
from .amp import Precision, adam, speed_up

# options that decide a network's shape: quoted when a checkpoint does not fit
SHAPE_OPTIONS = ('model', 'netG', 'netD', 'ngf', 'ndf', 'norm', 'input_nc', 'output_nc', 'n_layers_D', 'no_dropout',
                 'direction')

TORN_RETRIES = 20       # reads of a checkpoint another process is committing (0.25 s apart)


class BaseModel(ABC):
    """Subclasses set ``loss_names``, ``model_names``, ``visual_names`` and ``optimizers`` in ``__init__``
    and implement ``forward`` and ``optimize_parameters`` (and ``set_input`` when the batch is not A/B pairs).

    A network listed in ``model_names`` as 'G' is the attribute ``netG``. ``opt`` is parsed options
    (options/), which carry the process (``device``, ``rank``, ``distributed``) and the speed flags (models/amp.py).
    """

    def __init__(self, opt: argparse.Namespace):
        self.opt = opt
        self.gpu_ids = opt.gpu_ids
        self.isTrain = opt.isTrain
        self.device = opt.device
        self.save_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.loss_names: list[str] = []
        self.model_names: list[str] = []
        self.visual_names: list[str] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list = []
        self.image_paths: list[str] = []
        self.metric = 0.0  # used by the 'plateau' learning-rate policy
        # --amp (training; validation's forward passes too): autocast, loss scaling, optimiser steps
        self.precision = Precision(opt.amp if self.isTrain else 'off', self.device)

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        """Add model-specific flags and change defaults of existing ones."""
        return parser

    def set_input(self, input: dict) -> None:
        """Unpack a batch: ``real_A`` (and ``real_B`` for paired data), (N, C, H, W) in [-1, 1], on the device.

        The dataset has already applied ``--direction``; models with other inputs override this.
        """
        self.real_A = self.to_device(input['A'])
        if 'B' in input:
            self.real_B = self.to_device(input['B'])
        self.image_paths = input['A_paths']

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the model's device without waiting for the copy (the loader pins memory on GPUs), in
        channels-last format with --channels_last."""
        batch = batch.to(self.device, non_blocking=True)
        if self.opt.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def prepare_data(self, dataset, opt: argparse.Namespace | None = None) -> None:
        """Called by train.py before every epoch, by validation before each pass (with the val split's options
        ``opt``) and by test.py once, with the data loader: precompute what the data allows (MRNet's SAM feature
        cache). Nothing by default."""

    @abstractmethod
    def forward(self) -> None:
        """Run the generator(s); called by ``optimize_parameters`` and ``test``."""

    @abstractmethod
    def optimize_parameters(self) -> None:
        """One training step: losses, gradients, optimiser updates. Forward passes and losses go under
        ``with self.autocast():``, backward through :meth:`backward` and optimiser steps through :meth:`step`, so
        ``--amp`` applies; nothing in it waits for the GPU (losses are read only by :meth:`get_current_losses`)."""

    def train_step(self) -> None:
        """What train.py calls per batch: :meth:`optimize_parameters`, then the fp16 loss scale's update."""
        self.optimize_parameters()
        self.precision.update()

    # ------------------------------------------------------------------ mixed precision (models/amp.py)
    def autocast(self):
        """Context for forward passes and losses under --amp (a null context with --amp off)."""
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under --amp fp16."""
        self.precision.backward(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under --amp fp16 skipped when a gradient is inf/NaN."""
        self.precision.step(optimizer)

    def conditional_gan_step(self, discriminator: nn.Module | None) -> None:
        """One step in pix2pix's order: forward, then ``discriminator``'s step on ``backward_D()`` (none: no
        adversarial term), then G's on ``generator_loss()``, all under --amp."""
        with self.autocast():
            self.forward()
        if discriminator is not None:
            self.set_requires_grad(discriminator, True)
            self.optimizer_D.zero_grad()
            self.backward_D()
            self.step(self.optimizer_D)
            self.set_requires_grad(discriminator, False)
        self.optimizer_G.zero_grad()
        with self.autocast():
            self.loss_G = self.generator_loss()
        self.backward(self.loss_G)
        self.step(self.optimizer_G)

    def adam(self, params) -> torch.optim.Adam:
        """Adam(--lr, (--beta1, 0.999)) over ``params``; the fused kernel on GPUs."""
        return adam(params, self.opt, self.device)

    # ------------------------------------------------------------------ setup
    def setup(self, opt: argparse.Namespace) -> None:
        """Move networks to the device, wrap them for DDP, create schedulers and load checkpoints.

        Training from scratch loads nothing; ``--continue_train`` is handled by :meth:`load_training_state`;
        testing loads ``--epoch`` (or ``iter_<load_iter>``). Training (its process holds the run folder's lock)
        first finishes or discards what an interrupted save left behind (:func:`util.checkpoint.recover`).
        """
        if self.isTrain and opt.rank == 0:
            for line in recover(self.save_dir):
                print(line)
        for name in self.model_names:
            net = speed_up(getattr(self, 'net' + name).to(self.device), opt)
            if opt.distributed and any(p.requires_grad for p in net.parameters()):
                net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == 'cuda'
                                              else None, find_unused_parameters=True)
            setattr(self, 'net' + name, net)
        if self.isTrain:
            self.schedulers = [networks.get_scheduler(optimizer, opt) for optimizer in self.optimizers]
        if not self.isTrain:
            self.load_networks(f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch)
        self.print_networks(opt.verbose)

    def unwrap(self, name: str) -> nn.Module:
        """The network ``net<name>`` without its DDP wrapper."""
        net = getattr(self, 'net' + name)
        return net.module if isinstance(net, DistributedDataParallel) else net

    def eval(self) -> None:
        for name in self.model_names:
            getattr(self, 'net' + name).eval()

    @contextlib.contextmanager
    def unwrapped_eval(self):
        """Within the ``with`` block every network runs without its DDP wrapper (one process runs it alone, as
        validation does) and in eval mode; afterwards the wrappers and every module's training flag are back."""
        wrapped = {name: getattr(self, 'net' + name) for name in self.model_names}
        nets = {name: self.unwrap(name) for name in self.model_names}
        modes = {name: [m.training for m in net.modules()] for name, net in nets.items()}
        for name, net in nets.items():
            setattr(self, 'net' + name, net)
        self.eval()
        try:
            yield self
        finally:
            for name, net in nets.items():
                for m, flag in zip(net.modules(), modes[name]):
                    m.training = flag
                setattr(self, 'net' + name, wrapped[name])

    def test(self) -> None:
        """Forward pass without gradients (under --amp in training's validation), then :meth:`compute_visuals`.
        Test-time flips (--tta flip) wrap this in inference/test_time.py's :func:`run_test`."""
        with torch.no_grad(), self.autocast():
            self.forward()
            self.compute_visuals()

    def compute_visuals(self) -> None:
        """Extra visuals for visdom and HTML; nothing by default."""

    def get_image_paths(self) -> list[str]:
        return self.image_paths

    def update_learning_rate(self) -> float:
        """Step every scheduler once (at the end of an epoch); returns the new learning rate."""
        for scheduler in self.schedulers:
            if self.opt.lr_policy == 'plateau':
                scheduler.step(self.metric)
            else:
                scheduler.step()
        return self.optimizers[0].param_groups[0]['lr']

    def get_current_visuals(self) -> OrderedDict:
        """name -> Tensor (N, C, H, W) in [-1, 1]."""
        return OrderedDict((name, getattr(self, name)) for name in self.visual_names if isinstance(name, str))

    def get_current_losses(self) -> OrderedDict:
        """name -> float of the last step's losses."""
        return OrderedDict((name, float(torch.as_tensor(getattr(self, 'loss_' + name)).detach()))
                           for name in self.loss_names)

    @staticmethod
    def set_requires_grad(nets, requires_grad: bool = False) -> None:
        for net in nets if isinstance(nets, (list, tuple)) else [nets]:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad

    def print_networks(self, verbose: bool) -> None:
        if self.opt.rank != 0:
            return
        print('---------- Networks initialized -------------')
        for name in self.model_names:
            net = self.unwrap(name)
            if verbose:
                print(net)
            total = sum(p.numel() for p in net.parameters())
            trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
            print(f'[Network {name}] Total number of parameters : {total / 1e6:.3f} M '
                  f'({trainable / 1e6:.3f} M trainable)')
        print('-----------------------------------------------')

    # ------------------------------------------------------------------ save / load networks
    def network_path(self, epoch: str | int, name: str) -> str:
        return os.path.join(self.save_dir, f'{epoch}_net_{name}.pth')

    def _network_files(self, label: str | int, stamp: dict) -> dict[str, dict]:
        """path -> content of ``<label>_net_<name>.pth`` for every network (CPU tensors)."""
        options = plain_options(self.opt)
        files = {}
        for name in self.model_names:
            net = self.unwrap(name)
            state = net.checkpoint_state() if hasattr(net, 'checkpoint_state') else net.state_dict()
            meta = net.checkpoint_meta() if hasattr(net, 'checkpoint_meta') else {}
            state = {k: v.detach().cpu() for k, v in state.items()}
            files[self.network_path(label, name)] = network_file(state, meta, options, stamp)
        return files

    def save_networks(self, epoch: str | int) -> None:
        """Write ``<epoch>_net_<name>.pth`` for every network, all files as one unit (see util/checkpoint.py)."""
        save_together(self._network_files(epoch, save_stamp(epoch)), journal_path(self.save_dir, epoch))

    def load_networks(self, epoch: str | int) -> dict[str, dict]:
        """Load ``<epoch>_net_<name>.pth`` into every network; a mismatch names the file and the options, and
        files from different saves (a torn checkpoint) are refused. Returns name -> the file's save stamp."""
        for attempt in range(TORN_RETRIES + 1):
            loaded = {}
            for name in self.model_names:
                path = self.network_path(epoch, name)
                loaded[name] = (path, *unpack_network_file(safe_load(path, map_location=self.device), path))
            try:
                _check_same_save({os.path.basename(path): stamp for path, *_, stamp in loaded.values()}, epoch)
                break
            except RuntimeError:
                # a reader (test.py) may meet a training run's save half-way through its renames: read again
                if self.isTrain or attempt == TORN_RETRIES or not os.path.exists(journal_path(self.save_dir, epoch)):
                    raise
                time.sleep(0.25)
        stamps = {name: item[4] for name, item in loaded.items()}
        for name, (path, state, meta, options, _) in loaded.items():
            net = self.unwrap(name)
            if self.opt.rank == 0:
                print(f'loading the model from {path}')
            try:
                dropped = networks.load_network_state(net, state, meta)
            except RuntimeError as exc:
                raise RuntimeError(self._mismatch_message(path, net, state, options, exc)) from None
            if dropped and self.opt.rank == 0:
                print(f'{path}: ignored {len(dropped)} InstanceNorm running-statistics entries (running_mean, '
                      f'running_var, num_batches_tracked of an older PyTorch; these layers keep none), as the '
                      f'classic toolkit does')
        return stamps

    def _mismatch_message(self, path: str, net: nn.Module, state: dict, options: dict, exc: Exception) -> str:
        expected = net.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}'
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
        saved = ', '.join(f'--{k} {options[k]}' for k in SHAPE_OPTIONS if k in options) or 'unknown (no options stored)'
        now = ', '.join(f'--{k} {getattr(self.opt, k)}' for k in SHAPE_OPTIONS)

        def first(items: list[str]) -> str:
            return '; '.join(items[:5]) + (f' (+{len(items) - 5} more)' if len(items) > 5 else '') if items else 'none'
        return (f'checkpoint {path} does not fit the network.\n  saved with: {saved}\n  this run:   {now}\n'
                f'  missing keys: {first(missing)}\n  unexpected keys: {first(unexpected)}\n'
                f'  shape mismatches: {first(shapes)}\n  ({str(exc).splitlines()[0]})')

    # ------------------------------------------------------------------ full training state (resume)
    def image_pools(self) -> dict[str, ImagePool]:
        return {k: v for k, v in vars(self).items() if isinstance(v, ImagePool)}

    def save_training_state(self, label: str | int, counters: dict) -> None:
        """Networks plus ``<label>_state.pth``: optimisers, schedulers, image pools, RNG state, the --amp fp16 loss
        scale and the loop
        ``counters`` (epoch, epoch_iter, total_iters and whatever else the loop keeps there, stored as given),
        so ``--continue_train`` loses nothing. All files are written as one unit stamped with one save id."""
        stamp = save_stamp(label, counters)
        files = self._network_files(label, stamp)
        files[self.state_path(label)] = {
            'checkpoint': stamp,
            'counters': copy.deepcopy(dict(counters)),
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'pools': {k: p.state_dict() for k, p in self.image_pools().items()},
            'rng': seed.rng_state(),
            'precision': self.precision.state_dict(),
        }
        save_together(files, journal_path(self.save_dir, label))

    def state_path(self, label: str | int) -> str:
        return os.path.join(self.save_dir, f'{label}_state.pth')

    def load_training_state(self, label: str | int = 'latest') -> dict:
        """Restore what :meth:`save_training_state` wrote; returns the counters. Files of different saves are
        refused with an error naming them.

        A checkpoint from the classic toolkit (networks only) is accepted: then training starts at epoch
        ``--epoch_count`` with fresh optimisers, with a warning. Networks written by a training save (their stamp
        holds the loop counters) without their ``<label>_state.pth`` are refused, naming the missing file: resuming
        them would restart the epochs and the learning-rate schedule.
        """
        stamps = self.load_networks(label)
        path = self.state_path(label)
        if not os.path.exists(path):
            saved = next((s for s in stamps.values() if 'total_iters' in s), None)
            if saved is not None:
                nets = ', '.join(os.path.basename(self.network_path(label, n)) for n in stamps)
                raise FileNotFoundError(
                    f'cannot resume: {path} is missing, though {nets} beside it come from the training save at '
                    f'{describe_stamp(saved)}; that file holds the optimisers, learning-rate schedules, image pools, '
                    f'counters and random state. Put it back, or run without --continue_train to start over')
            print(f'warning: {path} not found: resuming with weights only (fresh optimisers, '
                  f'starting at epoch {self.opt.epoch_count}, --epoch_count)')
            return {'epoch': self.opt.epoch_count, 'epoch_iter': 0, 'total_iters': 0}
        state = safe_load(path, map_location='cpu')  # optimisers move their state to the parameters' device
        _check_same_save({**{os.path.basename(self.network_path(label, n)): s for n, s in stamps.items()},
                          os.path.basename(path): state.get('checkpoint') or {}}, label)
        for optimizer, s in zip(self.optimizers, state['optimizers']):
            optimizer.load_state_dict(s)
        for scheduler, s in zip(self.schedulers, state['schedulers']):
            scheduler.load_state_dict(s)
        for name, pool in self.image_pools().items():
            if name in state['pools']:
                pool.load_state_dict(state['pools'][name], self.device)
        seed.set_rng_state(state['rng'])
        self.precision.load_state_dict(state.get('precision'))
        return state['counters']


def _check_same_save(stamps: dict[str, dict], label: str | int) -> None:
    """Refuse a checkpoint whose files (file name -> stamp) come from different saves; files without a stamp
    (classic toolkit, older versions) are not checked."""
    ids = {stamp['id'] for stamp in stamps.values() if stamp.get('id')}
    if len(ids) > 1:
        files = '; '.join(f'{name}: {describe_stamp(stamp)}' for name, stamp in stamps.items())
        raise RuntimeError(f'checkpoint "{label}" is torn: its files come from different saves ({files}). A save '
                           f'may be in progress (try again) or was interrupted (train.py --continue_train '
                           f'completes it), or the files were copied from different runs')
