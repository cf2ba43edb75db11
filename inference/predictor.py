"""Synthesis for new patients: a trained generator applied to volumes that have only the input modality (an MR for
MR-only radiotherapy planning, a FLAIR whose T2 is missing), written on the input's own voxel grid.

    generator = load_generator(checkpoints_dir, name, epoch, device, sam_checkpoint=...)   # inference/loading.py
    inputs = find_inputs(['/data/new/patient1'], generator.settings.source)                # inference/inputs.py
    result = predict_volume(generator, data, reference, mask)     # fused, per-plane and disagreement volumes

A volume is reoriented to RAS, normalised as the dataset does (CT through the HU window, MR by body percentiles),
cut into slices along each plane, translated in batches, and the slices are put back with
inference.reassembly.VolumeAssembler (the same resampling test.py uses). The planes are fused voxel-wise (mean or
median) and their standard deviation is the disagreement map, a first per-voxel uncertainty (in target units).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from data.context import check_context, context_stack
from inference.body_composite import BodyComposite, composite_for
from inference.export.handoff import DICOM_FORMAT, HandOff, write_qa, write_series
from inference.inputs import VolumeInput, modality_warning, read_mask
from inference.loading import TrainedGenerator
from inference.outputs import OutputPlan, members_path
from inference.reassembly import VolumeAssembler
from inference.sliding_window import DEFAULT_OVERLAP, predict_canonical
from inference.test_time import flip_outputs, fuse, write_members
from util.body_mask import body_mask
from util.geometry import Geometry
from util.image_io import read_image
from inference.export.volume_file import write_image
from util.intensity import intensity_map, modality_kind
from util.slicing import plane_axis, slice_spacing, take_slice, to_square


@dataclass
class Prediction:
    """Volumes in target units on the input's grid (file voxel order): fused, per plane, and the disagreement
    (std over the planes; None with one plane)."""
    fused: np.ndarray
    planes: dict[str, np.ndarray]
    disagreement: np.ndarray | None
    n_slices: int
    mask: np.ndarray | None = None        # the body mask used (file voxel order)
    composite: BodyComposite | None = None  # --outside_body: air outside the grown mask (None: output kept)


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
                   batch_size: int = 8, progress: bool = True, outside_body: str = 'auto',
                   overlap: float = DEFAULT_OVERLAP) -> Prediction:
    """Synthesise the target of one volume ``data`` (file voxel order, source units) with the geometry of
    ``reference``; ``mask`` a canonical body mask (None: computed as the dataset does). Slices without body are
    not translated (their voxels are air in the plane volumes: -1 before mapping to target units); voxels outside
    the mask grown by the training margin are air too when ``outside_body`` asks (inference/body_composite.py).
    A 3D network predicts the whole volume by sliding windows overlapping by ``overlap`` (a fraction of its patch;
    inference/sliding_window.py) instead of slices."""
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
    if s.patch:
        whole, spread = predict_canonical(generator, normalised, geometry.zooms, overlap)
        assembler.put_volume(whole)
        if spread is not None:
            spreads.put_volume(spread)
    else:
        translate_slices(generator, normalised, mask, geometry.zooms, planes, batch_size, label, progress,
                         assembler, spreads)
    composite = composite_for(outside_body, [m.options for m in generator.members or [generator]])
    if composite is not None:
        keep = composite.keep(mask, geometry.zooms)
        assembler.clear_outside(keep)
        spreads.clear_outside(keep)
    target = s.target_map

    def to_target(canonical: np.ndarray) -> np.ndarray:
        values = np.clip(target.denormalise(canonical), target.low, target.high)
        return geometry.from_canonical(values)

    disagreement = assembler.disagreement(target, spreads)
    if disagreement is not None:
        disagreement = geometry.from_canonical(disagreement)
    return Prediction(to_target(assembler.fused(fusion)),
                      {p: to_target(assembler.volumes[p]) for p in assembler.planes},
                      disagreement, assembler.n_slices, geometry.from_canonical(mask), composite)


def translate_slices(generator: TrainedGenerator, normalised: np.ndarray, mask: np.ndarray,
                     zooms: tuple[float, float, float], planes: str, batch_size: int, label: str, progress: bool,
                     assembler: VolumeAssembler, spreads: VolumeAssembler) -> None:
    """The body's slices of a canonical ``normalised`` volume along ``planes``, translated in batches into
    ``assembler`` (their TTA / ensemble spread into ``spreads``), with a progress bar."""
    s = generator.settings
    from tqdm import tqdm
    bar = tqdm(total=count_slices(mask, planes), desc=label, unit='slice',
               disable=True if not progress else None, file=sys.stderr, leave=False)   # None: TTY only
    with torch.no_grad():
        for keys, batch in slice_batches(normalised, mask, zooms, planes, s.crop_size, s.mode, s.input_nc,
                                         batch_size, s.context):
            out, spread = translate(generator, batch.to(generator.device))
            for (plane, index), image in zip(keys, out):
                assembler.add(plane, index, image)
            if spread is not None:
                for (plane, index), image in zip(keys, spread):
                    spreads.add(plane, index, image)
            bar.update(len(keys))
    bar.close()


def translate(generator: TrainedGenerator, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, C, S, S) output on the CPU and its spread (N, 1, S, S) in [-1, 1] units (None for one generator
    without TTA): every member, each on the slice and (--tta flip) its in-plane flips, fused as test.py does
    (inference/test_time.py)."""
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
                 progress: bool = True, handoff: HandOff | None = None, outside_body: str = 'auto',
                 overlap: float = DEFAULT_OVERLAP) -> str:
    """Read ``item``, predict, write the files of ``plan`` (each atomically; the DICOM series and QA page of
    ``handoff``, see inference.export.handoff); returns the summary line."""
    start = time.perf_counter()
    data, reference = handoff.read(item.path, item.series) if handoff else read_image(item.path, item.series)
    geometry = Geometry.of(reference)
    mask_path = mask_path or item.mask
    mask = read_mask(mask_path, geometry, item.path, generator.settings.affine_tol) if mask_path else None
    result = predict_volume(generator, data, reference, mask, item.name, planes, fusion, batch_size, progress,
                            outside_body, overlap)
    notes = ''
    composited = result.composite.describe() if result.composite else ''
    if plan.fmt == DICOM_FORMAT:
        notes = write_series(handoff, plan.fused, item.name, reference, result.fused, composited)
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
                          result.mask, composited)
    seconds = time.perf_counter() - start
    if composited:
        notes += f'; {composited}'
    shape = 'x'.join(str(n) for n in data.shape)
    patch = generator.settings.patch
    done = (f'{result.n_slices} slices ({"".join(result.planes)})' if patch is None else
            f'sliding {"x".join(map(str, patch))} windows (overlap {overlap:g})')
    return f'{item.name}: {shape} voxels, {done}, {seconds:.1f} s -> {plan.fused}{notes}'
