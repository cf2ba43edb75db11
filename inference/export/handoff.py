"""What predict hands to a clinic beside the volume: a DICOM input checked before any work (modality, single-frame,
even slices), the synthetic CT as a DICOM CT Image Storage series in the MR's study and frame of reference
(inference.export.dicom_series), and a QA page per patient with its row of ``predict_summary.csv``
(inference.export.qa_page).

    handoffs = prepare_handoffs(inputs, plans, checkpoints=[...], ...)     # every check before the first slice
    notes = write_series(handoff, series_folder, name, reference, sct)          # the DICOM CT series
    notes += write_qa(handoff, qa_folder, name, data, reference, sct, disagreement, mask)
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace

import numpy as np

from inference.export.dicom_series import (
    NOT_REGISTERED,
    Provenance,
    SeriesIdentity,
    SourceSeries,
    read_source_series,
    resample_slices,
    write_ct_series,
)
from inference.export.qa_page import summary_row, update_summary, write_qa_page
from util.image_io import affine_to_itk, choose_series, dicom_series, read_image, reference_image
from util.disk import WriteError
from util.intensity import CT_WINDOW
from util.util import file_sha256
from util.version import TOOLKIT_NAME, __version__

DICOM_FORMAT = 'dicom'
SERIES_DESCRIPTION_LENGTH = 64            # LO
DERIVATION_LENGTH = 1024                  # ST


def dicom_modality(modality: str) -> str:
    """The DICOM Modality a model's input ``modality`` has: CT for ct and cbct, MR for every other name."""
    return 'CT' if modality.lower() in ('ct', 'cbct') else 'MR'


def series_sha256(path: str, files: list[str] | None = None) -> str:
    """sha256 of a file, or of a DICOM series: the sha256 of its files' sha256 digests in slice order."""
    if not files:
        return file_sha256(path)
    digest = hashlib.sha256()
    for name in files:
        digest.update(bytes.fromhex(file_sha256(name)))
    return digest.hexdigest()


@dataclass
class HandOff:
    """One input's clinical outputs: its checked DICOM ``source`` (None for a file), the ``identity`` and
    ``provenance`` of the DICOM series to write (None when no series is written), and the QA page's facts."""
    source: SourceSeries | None
    identity: SeriesIdentity | None
    provenance: Provenance | None
    facts: list[tuple[str, str]] = field(default_factory=list)
    window: tuple[float, float] = CT_WINDOW
    source_modality: str = 'MR'
    overwrite: bool = False
    extra: dict = field(default_factory=dict)

    def read(self, path: str, series: str | None) -> tuple[np.ndarray, object]:
        """The input volume: read_image, or for an unevenly spaced series accepted with --resample_slices the
        series put on even steps (inference.export.dicom_series.resample_slices)."""
        if self.source is not None and not self.source.even:
            data, affine = resample_slices(self.source)
            return data, reference_image(data, affine)
        return read_image(path, series)


def _description(checkpoints: list[str]) -> str:
    first = checkpoints[0]
    label = f'{os.path.basename(os.path.dirname(first))}/{os.path.basename(first).removesuffix(".pth")}' + \
        (f' +{len(checkpoints) - 1}' if len(checkpoints) > 1 else '')
    head = 'SYNTHETIC CT (not acquired) '
    room = SERIES_DESCRIPTION_LENGTH - len(head)
    return head + (label if len(label) <= room else '...' + label[-(room - 3):])


def prepare_handoffs(inputs: list, plans: list, checkpoints: list[str], sam_file: str | None, source_modality: str,
                     window: tuple[float, float], patient_id: str | None = None, patient_name: str | None = None,
                     resample: bool = False, overwrite: bool = False) -> list[HandOff | None]:
    """The hand-off of each (input, plan) of inference.predictor, made before any prediction so that every bad input
    stops the run before its first slice: DICOM inputs are checked (modality, multi-frame, orientation, spacing;
    uneven slices only with ``resample``), patient fields checked against their value representations. None for
    an input without DICOM source, DICOM output or QA page. ``checkpoints``: the generator file, or every member's
    of an ensemble (all named in the provenance)."""
    named = [f'{os.path.abspath(c)} (sha256 {file_sha256(c)})' for c in checkpoints]
    model_text = (f'checkpoint {named[0]}' if len(named) == 1 else
                  f'the voxel-wise fused ensemble of {len(named)} checkpoints {", ".join(named)}')
    sam_text = (f'{os.path.abspath(sam_file)} (sha256 {file_sha256(sam_file)})' if sam_file
                else 'none (no frozen SAM file needed)')
    handoffs = []
    for item, plan in zip(inputs, plans):
        source = None
        files = None
        if os.path.isdir(item.path):
            found = dicom_series(item.path)
            uid = choose_series(item.path, found, item.series)
            files = found[uid]
            source = read_source_series(item.path, files, uid, dicom_modality(source_modality), resample)
        writes_dicom = plan.fmt == DICOM_FORMAT
        if source is None and not writes_dicom and plan.qa is None:
            handoffs.append(None)
            continue
        identity = provenance = None
        if writes_dicom:
            identity = (source.identity(patient_id, patient_name) if source is not None
                        else SeriesIdentity.new(patient_id, patient_name))
            origin = (f'MR series {source.uid} ({len(source.files)} images)' if source is not None
                      else f'{item.path} (no DICOM identity)')
            derivation = (f'Synthetic CT computed from {origin} by {TOOLKIT_NAME} {__version__} with '
                          f'{model_text}, SAM {sam_text}. Not an acquired image.'
                          + (' The MR slices were unevenly spaced and were resampled onto even steps.'
                             if source is not None and not source.even else ''))
            provenance = Provenance(_description(checkpoints), derivation[:DERIVATION_LENGTH])
        sha = series_sha256(item.path, files)
        facts = [('input', os.path.abspath(item.path) + (f' (DICOM series {source.uid})' if source else '')),
                 ('input sha256' + (' (of the slice files\' sha256 in slice order)' if files else ''), sha),
                 ('output', os.path.abspath(plan.fused)),
                 *((f'checkpoint{f" {i + 1} of {len(named)}" if len(named) > 1 else ""}', text)
                   for i, text in enumerate(named)),
                 ('SAM file', sam_text)]
        if source is not None and not source.even:
            facts.append(('resampled', 'the input slices were unevenly spaced and were resampled onto even steps '
                                       '(--resample_slices); the synthetic CT is on the resampled grid'))
        if identity is not None:
            facts.append(('DICOM identity', _identity_text(identity)))
        handoffs.append(HandOff(source, identity, provenance, facts, tuple(window), dicom_modality(source_modality),
                                overwrite, {'input': item.path, 'input_sha256': sha,
                                            'output': os.path.abspath(plan.fused),
                                            'checkpoint': ';'.join(checkpoints), 'sam_file': sam_file or ''}))
    return handoffs


def _identity_text(identity: SeriesIdentity) -> str:
    if not identity.registered:
        return NOT_REGISTERED
    return (f'in the MR\'s study {identity.kept["StudyInstanceUID"]} and frame of reference '
            f'{identity.kept["FrameOfReferenceUID"]} (new series and instance UIDs)')


def write_series(handoff: HandOff, folder: str, name: str, reference, sct: np.ndarray,
                 composited: str = '') -> str:
    """Write the DICOM CT series of ``sct`` (HU, file voxel order of ``reference``) into ``folder``; returns the text
    added to the volume's summary line (the file count, and a line saying where the series belongs). ``composited``:
    what was set to air outside the body (inference/body_composite.py), recorded in its Derivation Description."""
    provenance = handoff.provenance
    if composited:
        derivation = f'{provenance.derivation} Post-processed: {composited}.'
        provenance = replace(provenance, derivation=derivation[:DERIVATION_LENGTH])
    files = write_ct_series(sct, reference.affine, folder, handoff.identity, provenance, handoff.overwrite)
    normal = np.abs(np.asarray(affine_to_itk(reference.affine)[2]).reshape(3, 3)[:, 2])
    kind = ('sagittal', 'coronal', 'axial')[int(normal.argmax())]
    plane = ('' if kind == 'axial' else f'\n{name}: the slices are {kind}, as the MR\'s; a planning system that '
                                        f'takes only axial CT slices needs an axial MR')
    return f' ({len(files)} DICOM CT files)\n{name}: DICOM series {_identity_text(handoff.identity)}{plane}'


def write_qa(handoff: HandOff, folder: str, name: str, data: np.ndarray, reference, sct: np.ndarray,
             disagreement: np.ndarray | None, mask: np.ndarray, composited: str = '') -> str:
    """Write the QA page into ``folder`` and its row of ``predict_summary.csv`` beside it; returns the text added to
    the volume's summary line (the page and the checks flagged). ``composited``: as for :func:`write_series`, one
    more fact on the page. A full disk is a util.disk.WriteError naming the page's file and saying that the output
    itself is written."""
    facts = [*handoff.facts, *([('outside the body', composited)] if composited else [])]
    try:
        page, checks = write_qa_page(folder, name, data, sct, disagreement, mask, reference, handoff.window,
                                     facts, source=handoff.source_modality)
    except WriteError as exc:             # the page absent (or the old one whole); the synthetic CT is written
        raise WriteError(f'{exc} ({handoff.extra["output"]} is written; its QA page is not)') from exc
    extra = {**handoff.extra, 'registered': '' if handoff.identity is None else
             ('yes' if handoff.identity.registered else 'no'), 'qa_page': page}
    update_summary(os.path.dirname(os.path.abspath(folder)), summary_row(name, checks, extra))
    flagged = checks.flagged_keys()
    return f'\n{name}: QA page {page}' + (f' (check: {", ".join(flagged)})' if flagged else '')
