"""Where a subject's volumes are: the dataset layouts every entry point (train, test, predict, evaluate, compare)
shares.

One folder per subject, a modality ``M`` of subject ``S`` being any of

- ``S/M.<ext>``: SynthRAD2023 (``mr.nii.gz``, ``ct.nii.gz``, ``mask.nii.gz``), SynthRAD2025 and SynthRAD2023
  Task 2 (``mr.mha`` or ``cbct.mha``, ``ct.mha``, ``mask.mha``);
- ``S/S_M.<ext>``: BraTS 2018-2021 (``BraTS2021_00000_flair.nii.gz``; flair, t1, t1ce, t2);
- ``S/S-M.<ext>``: BraTS 2023 and later (``BraTS-GLI-00000-000-t2f.nii.gz``; t1n, t1c, t2w, t2f);
- ``S/M/``: a folder holding the modality as a DICOM series;

with ``<ext>`` any format util.image_io reads (NIfTI first, then MetaImage, NRRD). The body mask is the modality
named ``mask``.
"""
from __future__ import annotations

import os

from util.image_io import IMAGE_EXTENSIONS

MASK_NAME = 'mask'
BRATS_MODALITIES = ('flair', 't1', 't1ce', 't2')            # BraTS 2018-2021: <subject>_<modality>
BRATS2023_MODALITIES = ('t1n', 't1c', 't2w', 't2f')         # BraTS 2023+: <subject>-<modality>
LAYOUT_EXAMPLES = ('<subject>/mr.nii.gz + ct.nii.gz (SynthRAD2023), <subject>/mr.mha + ct.mha (SynthRAD2025), '
                   '<subject>/<subject>_flair.nii.gz (BraTS 2018-21), <subject>/<subject>-t2f.nii.gz (BraTS 2023+)')


def modality_candidates(subject_dir: str, subject: str, name: str) -> list[str]:
    """Every file where modality ``name`` of ``subject`` may be, in the order they are tried."""
    stems = (name, f'{subject}_{name}', f'{subject}-{name}')
    return [os.path.join(subject_dir, stem + ext) for stem in stems for ext in IMAGE_EXTENSIONS]


def find_modality(subject_dir: str, subject: str, name: str) -> str | None:
    """The file of modality ``name`` in ``subject_dir`` (see the module docstring), or its DICOM folder, or None."""
    found = next((p for p in modality_candidates(subject_dir, subject, name) if os.path.isfile(p)), None)
    if found is None and os.path.isdir(os.path.join(subject_dir, name)):
        from util.image_io import dicom_series
        if dicom_series(os.path.join(subject_dir, name)):
            found = os.path.join(subject_dir, name)
    return found


def describe_candidates(subject_dir: str, subject: str, name: str) -> str:
    """Short list of the names tried for a modality, for error messages."""
    return ', '.join([f'{stem}.<ext>' for stem in (name, f'{subject}_{name}', f'{subject}-{name}')] +
                     [f'{name}/ (DICOM)']) + f' with <ext> one of {" ".join(IMAGE_EXTENSIONS)}'


def find_subject_file(root: str, subject: str, name: str) -> str | None:
    """Modality ``name`` in the subject folder ``<root>/<subject>/``, else the flat file ``<root>/<subject>.<ext>``;
    None when neither exists."""
    folder = os.path.join(root, subject)
    if os.path.isdir(folder):
        return find_modality(folder, subject, name)
    return next((p for p in (os.path.join(root, subject + ext) for ext in IMAGE_EXTENSIONS) if os.path.isfile(p)),
                None)


def subject_files(dataroot: str, subject: str, source: str, target: str) -> tuple[str | None, str | None, str | None]:
    """The files of modalities ``source`` and ``target`` and the body mask of ``<dataroot>/<subject>/`` (None for
    any that is missing)."""
    folder = os.path.join(dataroot, subject)
    return tuple(find_modality(folder, subject, name) for name in (source, target, MASK_NAME))
