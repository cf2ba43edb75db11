"""Where a synthesis goes: one output plan per input (fused volume, per-plane volumes, disagreement map, members
record), checked writable and free before any work starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from inference.export.handoff import DICOM_FORMAT
from inference.inputs import VolumeInput
from util.disk import check_writable
from inference.export.volume_file import WRITABLE_EXTENSIONS
from util.image_io import image_extension
from util.intensity import modality_kind


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
    input gives a DICOM CT series folder ``<name>_s<target>/`` when the target is CT, else NIfTI). Side outputs
    are named after the whole output, so that one patient's outputs in different formats never collide: beside
    ``<stem><ext>``, ``<stem>_<plane><ext>``, ``<stem>_disagreement<ext>`` and, with ``qa``, the QA page folder
    ``<stem><ext>_qa/``; beside a DICOM series ``<series>/``, ``<series>_dicom_<plane>.nii.gz``,
    ``<series>_dicom_disagreement.nii.gz`` and ``<series>_qa/``. ``spread``: the generator gives a TTA / ensemble
    spread, so one plane has a disagreement map too (without it, ``disagreement`` needs two planes)."""
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
        stem, side = (f'{fused}_dicom', '.nii.gz') if ext == DICOM_FORMAT else (fused[:-len(ext)], ext)
        plans.append(OutputPlan(fused, {p: f'{stem}_{p}{side}' for p in planes} if save_planes else {},
                                f'{stem}_disagreement{side}' if disagreement else None, ext,
                                f'{fused}_qa' if qa else None))
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


def members_path(fused: str) -> str:
    """The ensemble record beside a fused output, named after the whole output: ``<stem><ext>_members.json``
    (``<series>_members.json`` beside a DICOM series)."""
    return f'{fused}_members.json'
