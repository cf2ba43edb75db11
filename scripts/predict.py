"""Synthesise the target modality for new patients who have only the input (e.g. a synthetic CT from an MR):

    python scripts/predict.py --name NAME --input patient1/mr.nii.gz --output patient1_sct.nii.gz
    python scripts/predict.py --name NAME --input /data/new_patients --output /data/synthetic   # a folder
    python scripts/predict.py --name NAME --input dicom/series_folder --output sct.mha [--series UID]

--input: files (NIfTI .nii/.nii.gz, MetaImage .mha/.mhd, NRRD .nrrd/.nhdr), DICOM series folders, subject folders
in any dataset layout (SynthRAD ``mr.mha``, BraTS ``<subject>-t2f.nii.gz`` ...; the model's input modality and the
folder's ``mask`` are taken), or folders of these. --output: a file (one input; its extension picks the format) or
a folder receiving ``<name>_s<target>.<input's extension>`` (--format overrides). A DICOM input gives a DICOM CT
series folder ``<name>_s<target>/`` in the MR's study and frame of reference (--format dicom also from a file,
then in a new study: --patient_id, --patient_name). Every patient gets a QA page ``<output>_qa/index.html`` and a row
in ``predict_summary.csv`` (CT targets; --no_qa leaves them out).

The network and its data settings come from what the checkpoint stored at training time; a frozen SAM is rebuilt
from --sam_checkpoint, which must be the file the model was trained with (sha256 checked). The output is on
exactly the input's voxel grid and geometry, in target units (HU for CT, clipped to the training window).
--save_planes adds the per-plane volumes ``<stem>_x|y|z``, --disagreement the per-voxel standard deviation of the
plane predictions, the flips of --tta flip and the members of an ensemble, ``<stem>_disagreement`` (a first
uncertainty map). Every file appears whole or not at all;
existing outputs are refused unless --overwrite.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from data.triplanar_aligned_dataset import parse_planes  # noqa: E402
from util.cli import run_cli  # noqa: E402
from inference.body_composite import add_outside_body_option  # noqa: E402
from inference.export.volume_file import WRITABLE_EXTENSIONS  # noqa: E402
from inference.export.handoff import DICOM_FORMAT, prepare_handoffs  # noqa: E402
from inference.inputs import find_inputs, mask_for  # noqa: E402
from inference.loading import REQUIRED_OPTIONS, load_ensemble  # noqa: E402
from inference.outputs import check_outputs_free, check_outputs_writable, plan_outputs  # noqa: E402
from inference.predictor import predict_file  # noqa: E402
from inference.sliding_window import DEFAULT_OVERLAP, check_overlap, slice_flags_problem  # noqa: E402
from options.ingredients import ensemble_names  # noqa: E402
from util.intensity import modality_kind  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--name', required=True, help='experiment name: the checkpoint is <checkpoints_dir>/<name>/; '
                   'several, comma-separated (a,b,c), make an ensemble fused voxel-wise (--ensemble_fuse), its '
                   'members\' spread in the disagreement map and their checkpoints in <output>_members.json')
    p.add_argument('--input', required=True, nargs='+', help='files, DICOM series folders, subject folders, or '
                   'folders of these')
    p.add_argument('--output', required=True, help='output file (one input) or folder')
    p.add_argument('--checkpoints_dir', default='./checkpoints')
    p.add_argument('--epoch', default='latest', help='which checkpoint: <epoch>_net_G.pth')
    p.add_argument('--gpu_ids', default='0', help='GPU id, or -1 for the CPU (falls back to the CPU without a GPU)')
    p.add_argument('--sam_checkpoint', default=None, help='the SAM file the model was trained with (MRNet)')
    p.add_argument('--mask', default=None, help='body mask file (one input) or folder of masks (<name>/mask.<ext> '
                   'or <name>.<ext>); default: the subject folder\'s mask, else computed as the dataset does')
    p.add_argument('--series', default=None, help='DICOM series instance UID when a folder holds several')
    p.add_argument('--planes', default=None, help='planes to predict and fuse (default: those of training)')
    p.add_argument('--fusion', default=None, choices=['mean', 'median'], help='plane fusion (default: training\'s)')
    p.add_argument('--tta', default=None, choices=['none', 'flip'],
                   help='test-time augmentation (default: the checkpoint\'s --tta): flip averages the in-plane '
                        'flips, their spread added to the disagreement map')
    p.add_argument('--ensemble_fuse', default='mean', choices=['mean', 'median'],
                   help='voxel-wise fusion of an ensemble\'s members (--name a,b,c)')
    add_outside_body_option(p)
    p.add_argument('--sw_overlap', type=float, default=DEFAULT_OVERLAP,
                   help='3D checkpoints (--netG unet3d): overlap of the sliding windows, a fraction of the window '
                        '(the training patch) in [0, 1)')
    p.add_argument('--batch_size', type=int, default=8, help='slices per forward pass (SAM and U-Net)')
    p.add_argument('--compile', action='store_true', help='torch.compile the SAM encoder: worth it on a GPU for '
                   'several volumes (the first batches are slow while it compiles)')
    p.add_argument('--format', default=None, choices=(*WRITABLE_EXTENSIONS, DICOM_FORMAT),
                   help='output format when --output is a folder (default: the input\'s; a DICOM CT series for a '
                   'DICOM input when the target is CT)')
    p.add_argument('--patient_id', default=None, help='DICOM Patient ID of the CT series (default: the MR\'s; '
                   'empty for a file input)')
    p.add_argument('--patient_name', default=None, help='DICOM Patient Name (Family^Given) of the CT series '
                   '(default: the MR\'s; empty for a file input)')
    p.add_argument('--resample_slices', action='store_true', help='accept a DICOM series whose slices have gaps '
                   'or unequal spacing and resample it onto even steps (refused otherwise)')
    p.add_argument('--no_qa', action='store_true', help='no QA page and no predict_summary.csv')
    p.add_argument('--save_planes', action='store_true', help='also write the per-plane volumes')
    p.add_argument('--disagreement', action='store_true',
                   help='also write the voxel-wise std of the plane predictions, with the TTA flips\' and ensemble '
                        'members\' spread (target units)')
    p.add_argument('--overwrite', action='store_true', help='replace existing output files')
    p.add_argument('--no_progress', action='store_true', help='no progress bar')
    p.add_argument('--verbose', action='store_true', help='full tracebacks on errors')
    classic = p.add_argument_group('for checkpoints without stored options (the classic toolkit\'s)')
    for key in REQUIRED_OPTIONS:
        classic.add_argument(f'--{key}', type=int if key in ('ngf', 'input_nc', 'output_nc', 'crop_size') else str,
                             default=None)
    classic.add_argument('--direction', default=None, choices=['AtoB', 'BtoA'])
    classic.add_argument('--preprocess', default=None, choices=['resize', 'pad'])
    return p


def main(argv: list[str] | None = None) -> list[str]:
    """Returns the summary lines, one per volume."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f'--batch_size {args.batch_size}: must be at least 1')
    if args.planes is not None:
        parse_planes(args.planes)
    gpu = [int(i) for i in str(args.gpu_ids).split(',') if i.strip() and int(i) >= 0]
    device = torch.device('cuda', gpu[0]) if gpu and torch.cuda.is_available() else torch.device('cpu')
    given = {k: getattr(args, k) for k in (*REQUIRED_OPTIONS, 'direction', 'preprocess', 'compile', 'tta')}
    generator = load_ensemble(args.checkpoints_dir, ensemble_names(args.name), args.epoch, device,
                              args.sam_checkpoint, given, args.ensemble_fuse)
    s = generator.settings
    spread = s.tta == 'flip' or len(generator.paths) > 1
    check_overlap(args.sw_overlap)
    why = s.patch and slice_flags_problem(generator.path, spread, args.planes, args.fusion, args.save_planes,
                                          args.disagreement)
    if why:
        raise ValueError(why)
    extras = (f', 2.5D context {s.context}' if s.context else '') + (f', TTA {s.tta}' if s.tta != 'none' else '') + \
        (f', ensemble of {len(generator.paths)} ({generator.fuse})' if len(generator.paths) > 1 else '')
    path = (f'planes {args.planes or s.planes}, {args.fusion or s.fuse} fusion, {s.crop_size}x{s.crop_size} slices'
            if s.patch is None else f'{"x".join(map(str, s.patch))} sliding windows, overlap {args.sw_overlap:g}')
    print(f'{", ".join(generator.paths)}: {s.source} -> {s.target} ({s.unit}), {path}{extras}, {device}')
    inputs = find_inputs(args.input, s.source, args.series)
    planes = '' if s.patch else args.planes or s.planes
    qa = not args.no_qa and modality_kind(s.target) == 'ct'
    plans = plan_outputs(inputs, args.output, s.target, planes, args.save_planes, args.disagreement, args.format, qa,
                         spread=spread)
    check_outputs_free(plans, args.overwrite)
    check_outputs_writable(plans)       # before the first slice: a prediction is never computed to be lost
    masks = [mask_for(item, args.mask, len(inputs)) for item in inputs]
    handoffs = prepare_handoffs(inputs, plans, generator.paths, generator.options.get('sam_checkpoint'), s.source,
                                s.ct_window, args.patient_id, args.patient_name, args.resample_slices, args.overwrite)
    lines = []
    for item, plan, mask, handoff in zip(inputs, plans, masks, handoffs):
        line = predict_file(generator, item, plan, mask, args.planes, args.fusion, args.batch_size,
                            progress=not args.no_progress, handoff=handoff, outside_body=args.outside_body,
                            overlap=args.sw_overlap)
        print(line, flush=True)
        lines.append(line)
    return lines


if __name__ == '__main__':
    run_cli(main)
