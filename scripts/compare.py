"""Compare models, or ablations of one model, on one subject split in one command; writes what a results
section needs (the paper's Tables II-V and Figs. 3-4).

    python scripts/compare.py --dataroot DIR --models mrnet,pix2pix,cycle_gan --name TAG [shared options]
    python scripts/compare.py --dataroot DIR --models paper --name TAG     # all eight rows of Tables II-III
    python scripts/compare.py --dataroot DIR --models mrnet --ablation n_masks=1,2,3,4,6,7 --name TAG   # Table IV
    python scripts/compare.py --dataroot DIR --ablation losses --name TAG   # Table V: GAN + L1 vs + feature + mask
    python scripts/compare.py --dataroot DIR --ablation sam --name TAG      # with and without the SAM branch
    python scripts/compare.py --dataroot DIR --models mrnet,pix2pix --dose photon,proton --name TAG   # + dose

Every run trains with the same shared options: the paper's settings (section IV-B: triplanar 3x256x256 slices,
batch 4, Adam lr 1e-4 and beta1 0.5, 40 epochs, seed 2024, 70x70 PatchGAN with the LSGAN objective, and the
val split scored every epoch, --val_freq 1, the paper's early stopping) unless you pass others, which then apply
to every run. Validated runs are tested with their best checkpoint (``test_best``; ``--val_freq 0``: the last
one, ``test_latest``). A model keeps what it owns: its generator, normalisation, dropout, loss weights and image
pool. A name of --models is a model (models/*_model.py) or a generator of models/generators/ (transunet,
swin_unet, resvit, res_cnn, tcgan, ppt), which runs as ``--model pix2pix --netG NAME``: the paper's section IV-B
ran its baselines as generators of the same cGAN. Flags only some models know (e.g. --sam_checkpoint) go to
those; ``--model_args MODEL="FLAGS"`` gives one model flags of its own. Training-only flags (--n_epochs,
--max_dataset_size, --batch_size ...) are not passed to test.py, which always runs on the whole test split at
batch 1.

Each run is a normal experiment ``compare_TAG_<model>`` (ablations: ``compare_TAG_n_masks2`` ...) with its
checkpoints under --checkpoints_dir and test results under --results_dir. The comparison is written to
``<results_dir>/compare_TAG/``: table.md, table.csv, index.html, images/*.png (loss curves, per-plane box plots,
slice strips), shared_options.json, runs/*.json and logs/*.log.

Runs resume: a finished training (its final epoch done, or stopped by --patience) and a finished test
(metrics.csv present) are reused, an unfinished training continues from checkpoints/NAME/latest_state.pth;
--force redoes the runs of this call. A TAG whose earlier runs used other shared options is refused, with the
differing flags.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from evaluation.comparison.plan import Run, merge_record  # noqa: E402
from evaluation.comparison.results import options_path, run_record_path, tag_dir  # noqa: E402
from evaluation.comparison.flops import trained_images, training_step_flops  # noqa: E402
from evaluation.comparison.timing import measure_generator  # noqa: E402
from evaluation.test_cost import read_test_cost  # noqa: E402
from options.comparison_options import plan, reuse_training, train_parser  # noqa: E402
from options.training_budget import budget_spent  # noqa: E402
from options.dose_options import add_dose_arguments, dose_outdated, dose_tokens  # noqa: E402
from util.checkpoint import training_done  # noqa: E402
from util.cli import run_cli, run_logged  # noqa: E402
from util.json_file import read_json, write_json  # noqa: E402
from util.training_log import LOG_NAME, iteration_seconds, logged_step_flops, training_summary  # noqa: E402

TRAIN = os.path.join(ROOT, 'train.py')
TEST = os.path.join(ROOT, 'test.py')


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument('--name', required=True, help='TAG: results go to <results_dir>/compare_TAG/')
    p.add_argument('--models', default=None,
                   help='comma-separated models or models/generators/ names (run as pix2pix --netG NAME), the '
                        'reference first, or "paper" for the eight rows of Tables II-III (default '
                        'mrnet,pix2pix,cycle_gan; with --ablation: mrnet)')
    p.add_argument('--ablation', default=None,
                   help='instead of several models, variants of one: "losses" (Table V), "sam" (with and without '
                        'SAM), "synthrad2025" (docs/beyond_the_paper.md), NAME=ROW1,ROW2 (only those rows of one of '
                        'them, e.g. synthrad2025=mrnet,pix2pix,recipe) or FLAG=V1,V2,... (e.g. '
                        'n_masks=1,2,3,4,6,7 for Table IV; true/false for switches)')
    p.add_argument('--dataroot', default=None, help='one folder per subject (default: the demo dataset)')
    p.add_argument('--checkpoints_dir', default='./checkpoints')
    p.add_argument('--results_dir', default='./results')
    p.add_argument('--model_args', action='append', default=[], metavar='MODEL="FLAGS"',
                   help='flags for one model only, e.g. --model_args mrnet="--sam_input_size 512"; repeatable')
    p.add_argument('--reference', default=None,
                   help='row whose worst, median and best slices are shown (default: the first)')
    p.add_argument('--slices', default='', help='more slices to show, comma-separated test slice names '
                                               '<subject>_<plane><index>, e.g. 1BA001_z080')
    p.add_argument('--time_slices', type=int, default=20, help='slices timed for the inference time per slice')
    p.add_argument('--folds', type=int, default=0, metavar='K',
                   help='train every row on each of K per-subject folds of the non-test subjects (--n_folds K '
                        '--fold i) and test the ensemble of its K checkpoints (test.py --name a,b,c)')
    p.add_argument('--force', action='store_true', help='train and test the runs of this call again')
    p.add_argument('--quiet', action='store_true', help='do not echo train.py/test.py output (logs/ keeps it)')
    return add_dose_arguments(p)        # --dose ...: passed to test.py; a row tested without them is tested again




# ----------------------------------------------------------------------------- running

def run_iteration_seconds(run: Run, checkpoints_dir: str) -> float:
    """Mean computation time per training image of the run from each member's loss_log.jsonl, summed over the
    members (the folds of an ensemble); NaN, said once, when a member has no such log (trained before it
    existed)."""
    logs = [os.path.join(checkpoints_dir, m, LOG_NAME) for m in run.members]
    missing = [log for log in logs if not os.path.isfile(log)]
    if missing:
        print(f'[compare] {run.label}: no training log for programs ({", ".join(missing)}; runs trained before it '
              f'existed have only loss_log.txt), so its time per iteration is unknown', flush=True)
    return sum(iteration_seconds(log) for log in logs)


def training_memory(run: Run, checkpoints_dir: str) -> dict[str, float]:
    """{'train_peak_rss_mib', 'train_peak_gpu_mib'}: the largest peak memory of any training session of any
    member (loss_log.jsonl's end records, MiB); NaN when none recorded it."""
    peaks = [training_summary(os.path.join(checkpoints_dir, m, LOG_NAME)) for m in run.members]
    return {f'train_{key}': max((p[key] for p in peaks if not math.isnan(p[key])), default=math.nan)
            for key in ('peak_rss_mib', 'peak_gpu_mib')}


def measure_test_cost(test_args: list[str], n_slices: int) -> dict:
    """:func:`evaluation.comparison.timing.measure_generator` for a run's test.py arguments."""
    from options.ingredients import ensemble_names
    from options.test_options import TestOptions
    with contextlib.redirect_stdout(io.StringIO()):
        opt = TestOptions().parse(test_args)
    return measure_generator(opt, ensemble_names(opt.name), n_slices)


def measure_step_flops(train_args: list[str]) -> float:
    """:func:`evaluation.comparison.flops.training_step_flops` for a run's train.py arguments."""
    from options.train_options import TrainOptions
    with contextlib.redirect_stdout(io.StringIO()):
        opt = TrainOptions().parse(train_args, setup_device=False)
    return training_step_flops(opt)


def execute(run: Run, folder: str, args: argparse.Namespace, trained_runs: dict | None = None) -> dict:
    """Train (or resume, or reuse), test (or reuse) and measure one run (every fold of a --folds row); returns its
    record. ``trained_runs`` (training flags -> experiment) lets a row that differs in test flags only reuse an
    earlier row's training."""
    trained_runs = {} if trained_runs is None else trained_runs
    from inference.test_time import ensemble_result_name
    result_dir = os.path.join(args.results_dir, ensemble_result_name(run.members))
    record_path = run_record_path(folder, run.key)
    if args.force:
        for path in [os.path.join(args.checkpoints_dir, m) for m in run.members] + [result_dir]:
            shutil.rmtree(path, ignore_errors=True)
        if os.path.isfile(record_path):
            os.remove(record_path)
    reuse_training(run, args.checkpoints_dir, trained_runs)
    record = read_json(record_path) if os.path.isfile(record_path) else {}
    record.update(label=run.label, model=run.model, name=run.name, members=run.members)
    opt = train_parser(run.train_args).parse_args(run.train_args)
    last_epoch = opt.n_epochs + opt.n_epochs_decay
    logs = os.path.join(folder, 'logs')
    trained = False
    for i, member in enumerate(run.members):
        checkpoint_dir = os.path.join(args.checkpoints_dir, member)
        if training_done(checkpoint_dir, last_epoch) or budget_spent(checkpoint_dir, opt.time_budget_min):
            print(f'[compare] {run.label}: reusing the trained {member} (epoch {last_epoch} or the time budget done)',
                  flush=True)
            continue
        resume = os.path.isfile(os.path.join(checkpoint_dir, 'latest_state.pth'))
        print(f'[compare] {run.label}: {"resuming" if resume else "training"} {member}', flush=True)
        cmd = [sys.executable, TRAIN, *run.member_train_args(i)] + (['--continue_train'] if resume else [])
        start = time.perf_counter()
        try:
            run_logged(cmd, os.path.join(logs, f'{run.key}{"_fold%d" % i if run.folds else ""}_train.log'),
                       args.quiet)
        finally:
            record['train_seconds'] = record.get('train_seconds', 0.0) + time.perf_counter() - start
            record['train_sessions'] = record.get('train_sessions', 0) + 1
            write_json(record_path, record)
        trained = True
    record['iteration_seconds'] = run_iteration_seconds(run, args.checkpoints_dir)
    if trained or not math.isfinite(record.get('step_flops', math.nan)):
        record['step_flops'] = logged_step_flops(os.path.join(args.checkpoints_dir, run.members[0], LOG_NAME))
        if not math.isfinite(record['step_flops']):     # trained before train.py counted it, or --compile
            record['step_flops'] = measure_step_flops(run.member_train_args(0))
    record.update(training_memory(run, args.checkpoints_dir))
    images = sum(trained_images(os.path.join(args.checkpoints_dir, m)) for m in run.members)
    record.update(train_images=images, train_flops=record['step_flops'] * images / opt.batch_size)
    metrics = os.path.join(result_dir, f'test_{run.test_epoch}', 'metrics.csv')
    if trained or not os.path.isfile(metrics) or dose_outdated(args, os.path.dirname(metrics)):
        print(f'[compare] {run.label}: testing {",".join(run.members)}', flush=True)
        record['test_seconds'] = run_logged([sys.executable, TEST, *run.test_args, *dose_tokens(args)],
                                            os.path.join(logs, f'{run.key}_test.log'), args.quiet)
    else:
        print(f'[compare] {run.label}: reusing the test results {metrics}', flush=True)
    test_cost = read_test_cost(os.path.dirname(metrics))      # test.py's cost.json
    record.update(volume_seconds=test_cost['seconds_per_volume'], test_peak_rss_mib=test_cost['peak_rss_mib'],
                  test_peak_gpu_mib=test_cost['peak_gpu_mib'])
    if trained or not math.isfinite(record.get('inference_ms', math.nan)):
        record.update(measure_test_cost(run.test_args, args.time_slices))
    write_json(record_path, record)
    return record


def main(argv: list[str] | None = None) -> str:
    """Run the comparison; returns the path of its index.html."""
    args, shared_tokens = build_parser().parse_known_args(argv)
    runs, record = plan(args, shared_tokens)
    folder = tag_dir(args.results_dir, args.name)
    record = merge_record(folder, record, runs, args)
    write_json(options_path(folder), record)
    trained_runs: dict = {}
    for run in runs:
        measured = execute(run, folder, args, trained_runs)
        record['device'] = measured.get('device', record.get('device', ''))
        write_json(options_path(folder), record)
    from data.layouts import subject_files
    from evaluation.comparison.report import write_report
    page = write_report(folder, subject_files)
    print(f'[compare] table: {os.path.join(folder, "table.md")}\n[compare] page: {page}')
    return page


if __name__ == '__main__':
    run_cli(main)
