"""Synthesis for new patients: a trained generator applied to volumes that have only the input modality (an MR for
MR-only radiotherapy planning, a FLAIR whose T2 is missing), written on the input's own voxel grid.

    generator = load_generator(checkpoints_dir, name, epoch, device, sam_checkpoint=...)
    inputs = find_inputs(['/data/new/patient1'], generator.settings.source)
    result = predict_volume(generator, data, reference, mask)     # fused, per-plane and disagreement volumes

Everything the network and its data path need (netG, ngf, norm, n_masks, SAM type and input size, modalities,
direction, intensity mapping, slice size and mode, planes, fusion) comes from the options stored in the checkpoint
at training time. A volume is reoriented to RAS, normalised as the dataset does (CT through the HU window, MR by
body percentiles), cut into slices along each plane, translated in batches, and the slices are put back with
util.volume.VolumeAssembler (the same resampling test.py uses). The planes are fused voxel-wise (mean or median) and
their standard deviation is the disagreement map, a first per-voxel uncertainty (in target units).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from data.layouts import MASK_NAME, find_modality, find_subject_file
from data.triplanar_aligned_dataset import check_context, context_stack
from util.checkpoint import read_network_file
from util.disk import check_writable
from util.image_io import (IMAGE_EXTENSIONS, WRITABLE_EXTENSIONS, choose_series, dicom_series, image_extension,
                           image_stem, read_image, write_image)
from util.volume import (CT_WINDOW, MR_PERCENTILES, Geometry, IntensityMap, VolumeAssembler, body_mask,
                         intensity_map, modality_kind, plane_axis, slice_spacing, take_slice, to_square)
from util.util import file_sha256

from .clinical_output import DICOM_FORMAT, HandOff, write_qa, write_series
from .networks import define_G, load_network_state
from .test_time import flip_outputs, fuse, member_settings_conflict, write_members

# options a checkpoint without stored options (the classic toolkit's) must be given on the command line
REQUIRED_OPTIONS = ('netG', 'ngf', 'norm', 'input_nc', 'output_nc', 'modality_A', 'modality_B', 'crop_size')
# defaults of the data options when a checkpoint predates them
DATA_DEFAULTS = {'direction': 'AtoB', 'preprocess': 'resize', 'planes': 'xyz', 'fuse': 'mean', 'no_dropout': False,
                 'ct_window': list(CT_WINDOW), 'mr_percentiles': list(MR_PERCENTILES), 'init_type': 'normal',
                 'init_gain': 0.02, 'affine_tol': 1e-3}
GENERATOR_FILES = ('G', 'G_A')            # pix2pix/MRNet, then a CycleGAN's A -> B generator
MR_LOOKS_LIKE_CT = -500.0                 # an MR input whose 1st percentile is below this looks like CT in HU
MR_TARGET_MAP = IntensityMap(-1.0, 1.0)   # an MR target has no absolute unit: written in the network's [-1, 1]


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
    tta: str = 'none'                     # --tta: 'flip' averages the in-plane flips

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


# ----------------------------------------------------------------------------- the generator

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
    source, target = ((opt.modality_A, opt.modality_B) if opt.direction == 'AtoB'
                      else (opt.modality_B, opt.modality_A))
    settings = PredictSettings(source, target, int(opt.crop_size), opt.preprocess, opt.planes, opt.fuse,
                               int(opt.input_nc), tuple(opt.ct_window), tuple(opt.mr_percentiles),
                               float(opt.affine_tol), int(getattr(opt, 'context_slices', 0) or 0),
                               getattr(opt, 'tta', None) or 'none')
    return TrainedGenerator(net, settings, device, path, vars(opt))


def load_ensemble(checkpoints_dir: str, names: list[str], epoch: str = 'latest', device: torch.device | None = None,
                  sam_checkpoint: str | None = None, given: dict | None = None, fuse: str = 'mean') -> TrainedGenerator:
    """:func:`load_generator` for each experiment of ``names``; several make an ensemble (its first member with
    ``members`` set), refused when members differ in what their slices are (models/test_time.py)."""
    members = [load_generator(checkpoints_dir, n, epoch, device, sam_checkpoint, given) for n in names]
    if len(members) == 1:
        return members[0]
    why = member_settings_conflict(names, [m.options for m in members])
    if why:
        raise ValueError(why)
    first = members[0]
    return TrainedGenerator(first.net, first.settings, first.device, first.path, first.options, members, fuse)


# ----------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class VolumeInput:
    """One volume to synthesise from: a file or DICOM folder, the name its outputs get, its mask file (a subject
    folder's ``mask``) and the extension of its outputs (the input's format; ``dicom`` for a DICOM series)."""
    name: str
    path: str
    series: str | None = None
    mask: str | None = None
    ext: str = '.nii.gz'


def _dicom_input(name: str, folder: str, series: str | None, mask: str | None = None) -> VolumeInput:
    choose_series(folder, dicom_series(folder), series)      # several series and none chosen: refused now
    return VolumeInput(name, folder, series, mask, DICOM_FORMAT)


def _folder_inputs(folder: str, modality: str, series: str | None, top: bool) -> list[VolumeInput]:
    """A subject folder (any layout), a DICOM series folder, or (at the top level only) a folder of files and
    such folders."""
    name = os.path.basename(os.path.normpath(folder))
    source = find_modality(folder, name, modality)
    if source is not None:
        mask = find_modality(folder, name, MASK_NAME)
        if os.path.isdir(source):
            return [_dicom_input(name, source, series, mask)]
        return [VolumeInput(name, source, None, mask, image_extension(source))]
    if dicom_series(folder):
        return [_dicom_input(name, folder, series)]
    if not top:
        return []
    items = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.startswith('.') or entry == 'splits':
            continue
        if os.path.isfile(path) and image_extension(path):
            items.append(VolumeInput(image_stem(path), path, None, None, image_extension(path)))
        elif os.path.isdir(path):
            items += _folder_inputs(path, modality, series, top=False)
    return items


def find_inputs(paths: list[str], modality: str, series: str | None = None) -> list[VolumeInput]:
    """The volumes named by ``paths``: files (NIfTI, MetaImage, NRRD), DICOM series folders, subject folders in any
    layout (modality ``modality`` and its ``mask``), or folders of these. Errors name the path: missing, an
    unsupported file, a folder with nothing to read, several DICOM series without ``series``, two inputs with the
    same name."""
    found: list[VolumeInput] = []
    for path in paths:
        if os.path.isfile(path):
            ext = image_extension(path)
            if ext is None:
                raise ValueError(f'--input {path}: unsupported file type; expected {" ".join(IMAGE_EXTENSIONS)} or a '
                                 f'folder (DICOM series, subject folder or a folder of these)')
            found.append(VolumeInput(image_stem(path), path, None, None, ext))
        elif os.path.isdir(path):
            items = _folder_inputs(path, modality, series, top=True)
            if not items:
                raise FileNotFoundError(f'--input {path}: no volume found in this folder (expected image files '
                                        f'{" ".join(IMAGE_EXTENSIONS)}, a DICOM series, or subject folders holding '
                                        f'"{modality}")')
            found += items
        else:
            raise FileNotFoundError(f'--input {path}: no such file or folder')
    names: dict[str, str] = {}
    for item in found:
        if item.name in names:
            raise ValueError(f'two inputs would write outputs of the same name "{item.name}": {names[item.name]} and '
                             f'{item.path}; give them separately with distinct --output files')
        names[item.name] = item.path
    return found


# ----------------------------------------------------------------------------- outputs

@dataclass(frozen=True)
class OutputPlan:
    """The files one input's prediction goes to (``fused``: a DICOM series folder when ``fmt`` is 'dicom')."""
    fused: str
    planes: dict[str, str]                # plane -> file (with --save_planes)
    disagreement: str | None
    fmt: str = '.nii.gz'
    qa: str | None = None                 # the QA page's folder


def plan_outputs(inputs: list[VolumeInput], output: str, target: str, planes: str, save_planes: bool,
                 disagreement: bool, fmt: str | None = None, qa: bool = False,
                 spread: bool = False) -> list[OutputPlan]:
    """Where each prediction goes. ``output`` with an image extension is the file of the one input; otherwise a
    folder receiving ``<name>_s<target><ext>`` per input, ``ext`` the input's format (``fmt`` overrides; a DICOM
    input gives a DICOM CT series folder ``<name>_s<target>/`` when the target is CT, else NIfTI). Extra files
    beside it: ``<stem>_<plane><ext>`` and ``<stem>_disagreement<ext>`` (NIfTI beside a DICOM series) and, with
    ``qa``, the QA page folder ``<stem>_qa/``. ``spread``: the generator gives a TTA / ensemble spread, so one
    plane has a disagreement map too (without it, ``disagreement`` needs two planes)."""
    if disagreement and len(planes) < 2 and not spread:
        raise ValueError(f'--disagreement: with one plane ({planes}), one experiment and no --tta flip there is '
                         f'nothing to disagree; predict several planes (--planes xyz), add --tta flip or fuse an '
                         f'ensemble (--name a,b)')
    ext_of_output = image_extension(output)
    if ext_of_output is not None and len(inputs) != 1:
        raise ValueError(f'--output {output} is one file but there are {len(inputs)} input volumes; give a folder')
    is_ct = modality_kind(target) == 'ct'
    if fmt == DICOM_FORMAT and not is_ct:
        raise ValueError(f'--format dicom writes a CT Image Storage series, but this model synthesises {target}; '
                         f'choose a file format')
    if fmt == DICOM_FORMAT and ext_of_output is not None:
        raise ValueError(f'--format dicom writes a series folder per patient: give --output a folder, not '
                         f'{output}')
    plans = []
    for item in inputs:
        if ext_of_output is not None:
            ext, fused = ext_of_output, output
        else:
            ext = fmt or (item.ext if item.ext != DICOM_FORMAT or is_ct else '.nii.gz')
            fused = os.path.join(output, f'{item.name}_s{target}{"" if ext == DICOM_FORMAT else ext}')
        if ext not in (*WRITABLE_EXTENSIONS, DICOM_FORMAT):
            raise ValueError(f'--output {fused}: cannot write {ext} files; use one of {" ".join(WRITABLE_EXTENSIONS)}')
        stem, side = (fused, '.nii.gz') if ext == DICOM_FORMAT else (fused[:-len(ext)], ext)
        plans.append(OutputPlan(fused, {p: f'{stem}_{p}{side}' for p in planes} if save_planes else {},
                                f'{stem}_disagreement{side}' if disagreement else None, ext,
                                f'{stem}_qa' if qa else None))
    return plans


def output_files(plan: OutputPlan) -> list[str]:
    return [plan.fused, *plan.planes.values(), *([plan.disagreement] if plan.disagreement else []),
            *([plan.qa] if plan.qa else [])]


def check_outputs_writable(plans: list[OutputPlan]) -> None:
    """util.disk.WriteError naming the first output whose folder cannot be written (read-only, no permission),
    checked before the first slice is computed; nothing is created."""
    folders = {}
    for f in (f for p in plans for f in output_files(p)):
        folders.setdefault(os.path.dirname(os.path.abspath(f)), f)
    for folder, first in folders.items():
        check_writable(folder, first)


def check_outputs_free(plans: list[OutputPlan], overwrite: bool) -> None:
    """ValueError listing the outputs that exist already (unless ``overwrite``)."""
    existing = [f for p in plans for f in output_files(p) if os.path.exists(f)]
    if existing and not overwrite:
        several = len(existing) > 1
        raise ValueError(f'output file{"s" if several else ""} already exist{"" if several else "s"}: '
                         f'{", ".join(existing[:5])}{" ..." if len(existing) > 5 else ""}; pass --overwrite to '
                         f'replace {"them" if several else "it"}')


# ----------------------------------------------------------------------------- one volume

def modality_warning(data: np.ndarray, kind: str, label: str, modality: str) -> str | None:
    """Why a volume looks like the wrong modality for the model's input ``kind``, or None."""
    low = float(np.percentile(data, 1))
    if kind == 'mr' and low < MR_LOOKS_LIKE_CT:
        share = float(np.mean(data < MR_LOOKS_LIKE_CT))
        return (f'{label}: {share:.0%} of the voxels are below {MR_LOOKS_LIKE_CT:g}, as in a CT in Hounsfield units, '
                f'but this model reads {modality} (MR); is this the right input?')
    if kind == 'ct' and float(data.min()) >= 0:
        return (f'{label}: no voxel is below 0, but a CT in Hounsfield units has air near -1000; this looks like an '
                f'MR (or a CT without its rescale slope and intercept), while this model reads {modality} (CT)')
    return None


def read_mask(path: str, geometry: Geometry, image_path: str, tol: float) -> np.ndarray:
    """A mask file on ``geometry``'s grid as a canonical bool array; ValueError when its grid differs or it is
    empty."""
    data, img = read_image(path)
    why = geometry.mismatch(Geometry.of(img), tol)
    if why:
        raise ValueError(f'mask {path} is not on the voxel grid of {image_path}: {why}')
    mask = geometry.to_canonical(data > 0)
    if not mask.any():
        raise ValueError(f'mask {path} is empty')
    return mask


@dataclass
class Prediction:
    """Volumes in target units on the input's grid (file voxel order): fused, per plane, and the disagreement
    (std over the planes; None with one plane)."""
    fused: np.ndarray
    planes: dict[str, np.ndarray]
    disagreement: np.ndarray | None
    n_slices: int
    mask: np.ndarray | None = None        # the body mask used (file voxel order)


def slice_batches(volume: np.ndarray, mask: np.ndarray, zooms: tuple[float, float, float], planes: str, size: int,
                  mode: str, channels: int, batch_size: int,
                  context: int = 0) -> Iterator[tuple[list[tuple[str, int]], torch.Tensor]]:
    """Batches ([(plane, index)], (N, channels, size, size)) of the slices of a canonical volume in [-1, 1] that
    hold some of the body ``mask``, plane by plane; with ``context`` K > 0 each item is the 2K+1 neighbouring
    slices (edges replicated), as the dataset gives them."""
    todo = []
    for plane in planes:
        axis = plane_axis(plane)
        inside = mask.any(axis=tuple(a for a in range(3) if a != axis))
        todo += [(plane, int(i)) for i in np.flatnonzero(inside)]
    for start in range(0, len(todo), batch_size):
        keys = todo[start:start + batch_size]
        images = []
        for plane, index in keys:
            axis = plane_axis(plane)
            image = torch.from_numpy(context_stack(volume, axis, index, context) if context else
                                     take_slice(volume, axis, index)[None])
            images.append(to_square(image, slice_spacing(zooms, axis), size, mode, fill=-1.0))
        batch = torch.stack(images)
        yield keys, batch if context else batch.expand(-1, channels, -1, -1)


def count_slices(mask: np.ndarray, planes: str) -> int:
    return sum(int(mask.any(axis=tuple(a for a in range(3) if a != plane_axis(p))).sum()) for p in planes)


def predict_volume(generator: TrainedGenerator, data: np.ndarray, reference, mask: np.ndarray | None = None,
                   label: str = 'volume', planes: str | None = None, fusion: str | None = None,
                   batch_size: int = 8, progress: bool = True) -> Prediction:
    """Synthesise the target of one volume ``data`` (file voxel order, source units) with the geometry of
    ``reference``; ``mask`` a canonical body mask (None: computed as the dataset does). Slices without body are
    not translated (their voxels are air in the plane volumes: -1 before mapping to target units)."""
    s = generator.settings
    planes = planes or s.planes
    fusion = fusion or s.fuse
    geometry = Geometry.of(reference)
    volume = geometry.to_canonical(data)
    kind = modality_kind(s.source)
    why = modality_warning(volume, kind, label, s.source)
    if why:
        warnings.warn(why, UserWarning, stacklevel=2)
    if mask is None:
        mask = body_mask([(volume, kind)], label)
        if not mask.any():
            raise ValueError(f'{label}: no body found (the volume looks empty); pass --mask')
    check_context(s.context, {label: (label, volume.shape)})
    source_map = intensity_map(kind, volume, mask, label, s.ct_window, s.mr_percentiles)
    normalised = source_map.normalise(volume)
    assembler = VolumeAssembler(geometry.canonical_shape, geometry.zooms, s.mode)
    spreads = VolumeAssembler(geometry.canonical_shape, geometry.zooms, s.mode, fill=0.0)  # TTA/ensemble spread
    total = count_slices(mask, planes)
    from tqdm import tqdm
    bar = tqdm(total=total, desc=label, unit='slice', disable=True if not progress else None,   # None: TTY only
               file=sys.stderr, leave=False)
    with torch.no_grad():
        for keys, batch in slice_batches(normalised, mask, geometry.zooms, planes, s.crop_size, s.mode, s.input_nc,
                                         batch_size, s.context):
            out, spread = translate(generator, batch.to(generator.device))
            for (plane, index), image in zip(keys, out):
                assembler.add(plane, index, image)
            if spread is not None:
                for (plane, index), image in zip(keys, spread):
                    spreads.add(plane, index, image)
            bar.update(len(keys))
    bar.close()
    target = s.target_map

    def to_target(canonical: np.ndarray) -> np.ndarray:
        values = np.clip(target.denormalise(canonical), target.low, target.high)
        return geometry.from_canonical(values)

    disagreement = assembler.disagreement(target, spreads)
    if disagreement is not None:
        disagreement = geometry.from_canonical(disagreement)
    return Prediction(to_target(assembler.fused(fusion)),
                      {p: to_target(assembler.volumes[p]) for p in assembler.planes},
                      disagreement, assembler.n_slices, geometry.from_canonical(mask))


def translate(generator: TrainedGenerator, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, C, S, S) output on the CPU and its spread (N, 1, S, S) in [-1, 1] units (None for one generator
    without TTA): every member, each on the slice and (--tta flip) its in-plane flips, fused as test.py does
    (models/test_time.py)."""
    members = generator.members or [generator]
    tta = generator.settings.tta == 'flip'
    if len(members) == 1 and not tta:
        return generator.net(batch).float().cpu(), None
    outputs, spreads = [], []
    for member in members:
        out, spread = fuse(flip_outputs(member.net, batch).float()) if tta else (member.net(batch).float(), None)
        outputs.append(out)
        if spread is not None:
            spreads.append(spread)
    fused, spread = fuse(torch.stack(outputs), generator.fuse, spreads)
    return fused.cpu(), spread.cpu()


def predict_file(generator: TrainedGenerator, item: VolumeInput, plan: OutputPlan, mask_path: str | None = None,
                 planes: str | None = None, fusion: str | None = None, batch_size: int = 8,
                 progress: bool = True, handoff: HandOff | None = None) -> str:
    """Read ``item``, predict, write the files of ``plan`` (each atomically; the DICOM series and QA page of
    ``handoff``, see models.clinical_output); returns the summary line."""
    start = time.perf_counter()
    data, reference = handoff.read(item.path, item.series) if handoff else read_image(item.path, item.series)
    geometry = Geometry.of(reference)
    mask_path = mask_path or item.mask
    mask = read_mask(mask_path, geometry, item.path, generator.settings.affine_tol) if mask_path else None
    result = predict_volume(generator, data, reference, mask, item.name, planes, fusion, batch_size, progress)
    notes = ''
    if plan.fmt == DICOM_FORMAT:
        notes = write_series(handoff, plan.fused, item.name, reference, result.fused)
    else:
        write_image(result.fused, reference, plan.fused)
    for plane, path in plan.planes.items():
        write_image(result.planes[plane], reference, path)
    if plan.disagreement and result.disagreement is not None:
        write_image(result.disagreement, reference, plan.disagreement)
    if len(generator.paths) > 1:
        write_members(members_path(plan.fused), generator.paths, generator.fuse, output=os.path.basename(plan.fused),
                      tta=generator.settings.tta)
    if plan.qa:                           # last: the page and its summary row only for outputs that are complete
        notes += write_qa(handoff, plan.qa, item.name, data, reference, result.fused, result.disagreement,
                          result.mask)
    seconds = time.perf_counter() - start
    shape = 'x'.join(str(n) for n in data.shape)
    return (f'{item.name}: {shape} voxels, {result.n_slices} slices ({"".join(result.planes)}), {seconds:.1f} s -> '
            f'{plan.fused}{notes}')


def members_path(fused: str) -> str:
    """The ensemble record beside a fused output: ``<stem>_members.json``."""
    ext = image_extension(fused) or ''
    return f'{fused[:len(fused) - len(ext)]}_members.json'


def mask_for(item: VolumeInput, mask: str | None, n_inputs: int) -> str | None:
    """The mask file of ``item`` from --mask (a file for a single input, or a folder with ``<name>/mask.<ext>`` or
    ``<name>.<ext>``); None without --mask."""
    if mask is None:
        return None
    if os.path.isfile(mask):
        if n_inputs != 1:
            raise ValueError(f'--mask {mask} is one file but there are {n_inputs} input volumes; give a folder of '
                             f'masks (<name>/mask.<ext> or <name>.<ext>)')
        return mask
    if not os.path.isdir(mask):
        raise FileNotFoundError(f'--mask {mask}: no such file or folder')
    found = find_subject_file(mask, item.name, MASK_NAME)
    if found is None:
        raise FileNotFoundError(f'--mask {mask}: no mask for {item.name} (looked for {item.name}/mask.<ext> and '
                                f'{item.name}.<ext>)')
    return found

