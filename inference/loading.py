"""A trained generator (or an ensemble of them) with the options stored in its checkpoint.

Everything the network and its data path need (netG, ngf, norm, n_masks, SAM type and input size, modalities,
direction, intensity mapping, slice size and mode, planes, fusion) comes from the options stored in the checkpoint
at training time.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from data.patch3d_dataset import parse_patch_size
from data.resampling import parse_spacing
from models.generators.unet3d import is_volume_generator
from models.networks import define_G, load_network_state
from util.checkpoint import read_network_file
from util.direction import source_target
from util.intensity import CT_WINDOW, MR_PERCENTILES, IntensityMap, modality_kind
from util.util import file_sha256, file_version

MR_TARGET_MAP = IntensityMap(-1.0, 1.0)   # an MR target has no absolute unit: written in the network's [-1, 1]

# settings ensemble members must share (what their slices and units are)
ENSEMBLE_SHARED = ('modality_A', 'modality_B', 'direction', 'context_slices', 'crop_size', 'preprocess',
                   'ct_window', 'mr_percentiles', 'input_nc', 'output_nc', 'target_spacing')


# options a checkpoint without stored options (the classic toolkit's) must be given on the command line
REQUIRED_OPTIONS = ('netG', 'ngf', 'norm', 'input_nc', 'output_nc', 'modality_A', 'modality_B', 'crop_size')


# defaults of the data and test options when a checkpoint predates them
DATA_DEFAULTS = {'direction': 'AtoB', 'preprocess': 'resize', 'planes': 'xyz', 'fuse': 'mean', 'no_dropout': False,
                 'ct_window': list(CT_WINDOW), 'mr_percentiles': list(MR_PERCENTILES), 'init_type': 'normal',
                 'init_gain': 0.02, 'affine_tol': 1e-3, 'context_slices': 0, 'tta': 'none'}


GENERATOR_FILES = ('G', 'G_A')            # pix2pix/MRNet, then a CycleGAN's A -> B generator


@dataclass(frozen=True)
class PredictSettings:
    """The data path of a trained generator (from its stored options)."""
    source: str                           # input modality (after --direction)
    target: str                           # synthesised modality
    crop_size: int
    mode: str                             # 'resize' or 'pad'
    planes: str
    fuse: str
    input_nc: int
    ct_window: tuple[float, float]
    mr_percentiles: tuple[float, float]
    affine_tol: float
    context: int = 0                      # --context_slices K: 2K+1 neighbouring slices as channels
    tta: str = 'none'                     # --tta: 'flip' averages the in-plane flips (3D: the 8 mirrorings)
    patch: tuple[int, int, int] | None = None   # a 3D network's --patch_size, its sliding window; None: slice-wise
    spacing: tuple[float, float, float] | None = None   # a 3D network's --target_spacing (mm); None: native grid

    @property
    def target_map(self) -> IntensityMap:
        """[-1, 1] -> target units: the HU window for CT, identity for MR."""
        return IntensityMap(*self.ct_window) if modality_kind(self.target) == 'ct' else MR_TARGET_MAP

    @property
    def unit(self) -> str:
        return 'HU' if modality_kind(self.target) == 'ct' else 'normalised [-1, 1]'


@dataclass
class TrainedGenerator:
    """A trained generator, ready to translate slices (N, input_nc, S, S) in [-1, 1]."""
    net: nn.Module
    settings: PredictSettings
    device: torch.device
    path: str
    options: dict = field(default_factory=dict)
    members: list['TrainedGenerator'] = field(default_factory=list)   # an ensemble's generators (itself first)
    fuse: str = 'mean'                    # how an ensemble's members are fused voxel-wise

    @property
    def paths(self) -> list[str]:
        """The checkpoint file of every member (one for a single generator)."""
        return [m.path for m in self.members] or [self.path]


def generator_path(checkpoints_dir: str, name: str, epoch: str) -> str:
    """``<checkpoints_dir>/<name>/<epoch>_net_G.pth`` (or ``_net_G_A.pth`` of a CycleGAN); FileNotFoundError
    naming the file and the epochs that exist."""
    folder = os.path.join(checkpoints_dir, name)
    for net in GENERATOR_FILES:
        path = os.path.join(folder, f'{epoch}_net_{net}.pth')
        if os.path.isfile(path):
            return path
    wanted = os.path.join(folder, f'{epoch}_net_G.pth')
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'checkpoint {wanted} does not exist: no experiment folder {folder} (check --name '
                                f'and --checkpoints_dir)')
    epochs = sorted({f.split('_net_')[0] for f in os.listdir(folder) if '_net_G' in f and f.endswith('.pth')})
    raise FileNotFoundError(f'checkpoint {wanted} does not exist; {folder} has generator checkpoints for --epoch '
                            f'{", ".join(epochs) if epochs else "(none)"}')

def is_volume_checkpoint(options: dict) -> bool:
    """Whether stored training ``options`` are a 3D network's (--netG unet3d on 3D patches: sliding windows,
    inference/sliding_window.py) rather than a slice-wise one's."""
    return is_volume_generator(str(options.get('netG', '')))


def describe_kind(name: str, options: dict) -> str:
    """'NAME (a 3D network, --netG unet3d)' or 'NAME (slice-wise, --netG sam_unet)', for refusals."""
    kind = 'a 3D network' if is_volume_checkpoint(options) else 'slice-wise'
    return f'{name} ({kind}, --netG {options.get("netG", "?")})'


def member_settings_conflict(names: list[str], options: list[dict]) -> str | None:
    """The first ENSEMBLE_SHARED setting two members differ in, as a sentence naming both; None when they agree.
    A 3D member beside a slice-wise one is refused first."""
    first, ref = names[0], options[0]
    for name, opts in zip(names[1:], options[1:]):
        if is_volume_checkpoint(ref) != is_volume_checkpoint(opts):
            return (f'ensemble members {describe_kind(first, ref)} and {describe_kind(name, opts)} cannot be '
                    f'fused: one predicts whole volumes by sliding windows, the other slice by slice; ensemble '
                    f'3D checkpoints with 3D ones and slice-wise with slice-wise')
        for key in ENSEMBLE_SHARED:
            a, b = ref.get(key, 0 if key == 'context_slices' else None), opts.get(key, 0 if key == 'context_slices'
                                                                                   else None)
            if a != b:
                return (f'ensemble members {first} and {name} were trained with different --{key} ({a} and {b}); '
                        f'an ensemble fuses slices of one kind')
    return None


_STORED_OPTIONS: dict[tuple[str, int, int], dict] = {}


def stored_training_options(checkpoints_dir: str, name: str, epoch: str) -> dict:
    """The options stored in the generator checkpoint of :func:`generator_path`; {} when there is no such file
    (test.py then reports the missing checkpoint itself). Read once per :func:`util.util.file_version`: test.py
    and compare.py ask for them many times, and each read loads the whole network."""
    try:
        path = generator_path(checkpoints_dir, name, epoch)
        key = file_version(path)
    except FileNotFoundError:
        return {}
    if key not in _STORED_OPTIONS:
        _STORED_OPTIONS[key] = read_network_file(path)[2] or {}
    return dict(_STORED_OPTIONS[key])


def stored_options(path: str, options: dict, given: dict) -> argparse.Namespace:
    """The training options of the checkpoint ``path`` completed by ``given`` (command-line values, which win);
    ValueError listing the flags a checkpoint without stored options still needs."""
    merged = {**DATA_DEFAULTS, **options, **{k: v for k, v in given.items() if v is not None}}
    missing = [k for k in REQUIRED_OPTIONS if k not in merged]
    if missing:
        raise ValueError(f'{path} stores no training options (a classic checkpoint): pass '
                         f'{" ".join("--" + k + " ..." for k in missing)} as it was trained')
    return argparse.Namespace(**merged)


def check_sam_file(path: str, meta: dict, sam_checkpoint: str | None) -> str | None:
    """The SAM file to rebuild the frozen encoder with: None when the generator has no SAM, a fine-tuned one
    (its weights are in the checkpoint) or a randomly initialised one; else ``sam_checkpoint``, whose sha256 must
    be the one recorded at training. ValueError naming both files otherwise."""
    if meta.get('no_sam', True) or meta.get('sam_finetune'):
        return None
    trained_name, trained_sha = meta.get('sam_checkpoint'), meta.get('sam_sha256')
    if trained_sha is None:
        if sam_checkpoint:
            raise ValueError(f'{path} was trained with a randomly initialised SAM encoder, so --sam_checkpoint '
                             f'{sam_checkpoint} would give it features it never saw; leave --sam_checkpoint out')
        return None
    if not sam_checkpoint:
        raise ValueError(f'{path} was trained with the SAM weights {trained_name} (sha256 {trained_sha}); pass '
                         f'--sam_checkpoint with that file')
    if not os.path.isfile(sam_checkpoint):
        raise FileNotFoundError(f'--sam_checkpoint {sam_checkpoint}: no such file')
    sha = file_sha256(sam_checkpoint)
    if sha != trained_sha:
        raise ValueError(f'--sam_checkpoint {sam_checkpoint} (sha256 {sha}) is not the SAM file {path} was trained '
                         f'with: {trained_name} (sha256 {trained_sha})')
    return sam_checkpoint


def load_generator(checkpoints_dir: str, name: str, epoch: str = 'latest', device: torch.device | None = None,
                   sam_checkpoint: str | None = None, given: dict | None = None) -> TrainedGenerator:
    """Rebuild and load the generator of experiment ``name`` from its checkpoint and stored options; ``given``
    (option -> value, None = not given) completes or overrides them (e.g. --planes, or everything for a classic
    checkpoint)."""
    device = device or torch.device('cpu')
    path = generator_path(checkpoints_dir, name, epoch)
    state, meta, options = read_network_file(path)
    opt = stored_options(path, options, given or {})
    opt.sam_checkpoint = check_sam_file(path, meta, sam_checkpoint)
    net = define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm, not opt.no_dropout, opt.init_type,
                   opt.init_gain, opt=opt)
    try:
        load_network_state(net, state, meta)
    except RuntimeError as exc:
        raise RuntimeError(f'checkpoint {path} does not fit the generator --netG {opt.netG} --ngf {opt.ngf} --norm '
                           f'{opt.norm}: {str(exc).splitlines()[0]}') from None
    net.to(device).eval()
    source, target = source_target(opt)
    volume = is_volume_checkpoint(vars(opt))
    settings = PredictSettings(source, target, int(opt.crop_size), opt.preprocess, opt.planes, opt.fuse,
                               int(opt.input_nc), tuple(opt.ct_window), tuple(opt.mr_percentiles),
                               float(opt.affine_tol), int(opt.context_slices), opt.tta,
                               parse_patch_size(opt.patch_size) if volume else None,
                               parse_spacing(getattr(opt, 'target_spacing', '')) if volume else None)
    return TrainedGenerator(net, settings, device, path, vars(opt))


def load_ensemble(checkpoints_dir: str, names: list[str], epoch: str = 'latest', device: torch.device | None = None,
                  sam_checkpoint: str | None = None, given: dict | None = None, fuse: str = 'mean') -> TrainedGenerator:
    """:func:`load_generator` for each experiment of ``names``; several make an ensemble (its first member with
    ``members`` set), refused when members differ in what their slices are (inference/test_time.py)."""
    members = [load_generator(checkpoints_dir, n, epoch, device, sam_checkpoint, given) for n in names]
    if len(members) == 1:
        return members[0]
    why = member_settings_conflict(names, [m.options for m in members])
    if why:
        raise ValueError(why)
    first = members[0]
    return TrainedGenerator(first.net, first.settings, first.device, first.path, first.options, members, fuse)
