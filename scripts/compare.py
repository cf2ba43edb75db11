"""Compare models, or ablations of one model, on one subject split in one command; writes what a results
section needs (the paper's Tables II-V and Figs. 3-4).

    python scripts/compare.py --dataroot DIR --models mrnet,pix2pix,cycle_gan --name TAG [shared options]
    python scripts/compare.py --dataroot DIR --models paper --name TAG     # all eight rows of Tables II-III
    python scripts/compare.py --dataroot DIR --models mrnet --ablation n_masks=1,2,3,4,6,7 --name TAG   # Table IV
    python scripts/compare.py --dataroot DIR --ablation losses --name TAG   # Table V: GAN + L1 vs + feature + mask
    python scripts/compare.py --dataroot DIR --ablation sam --name TAG      # with and without the SAM branch

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
import glob
import io
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from evaluation.comparison.plan import TRAINING_NEUTRAL, Run  # noqa: E402
from options.comparison_options import plan, train_parser  # noqa: E402
from util.cli import run_cli  # noqa: E402
from evaluation.comparison.results import option_differences, options_path, run_record_path, tag_dir  # noqa: E402
from util.json_file import read_json, write_json  # noqa: E402
from util.training_log import LOG_NAME, iteration_seconds  # noqa: E402

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
                        'SAM) or FLAG=V1,V2,... (e.g. n_masks=1,2,3,4,6,7 for Table IV; true/false for switches)')
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
    return p




def merge_record(folder: str, record: dict, runs: list[Run], args: argparse.Namespace) -> dict:
    """The comparison's record with this call's runs added; ValueError when the TAG's earlier runs used other
    shared options, data, mode or flags for a run of the same name."""
    path = options_path(folder)
    entries = [r.entry(folder, args.results_dir, args.checkpoints_dir) for r in runs]
    if not os.path.isfile(path):
        return {**record, 'runs': entries}
    old = read_json(path)
    problems = []
    if old['mode'] != record['mode']:
        problems.append(f'it is {"an ablation" if old["mode"] == "ablation" else "a comparison of models"}')
    problems += option_differences(old['shared'], record['shared'])
    for key in ('dataroot', 'source', 'target', 'test_subjects', 'train_subjects'):
        if old['data'][key] != record['data'][key]:
            problems.append(f'{key}: earlier {old["data"][key]!r}, now {record["data"][key]!r}')
    earlier = {e['key']: e for e in old['runs']}
    for e in entries:
        if e['key'] in earlier and (earlier[e['key']]['model'], earlier[e['key']]['args']) != (e['model'], e['args']):
            problems.append(f'run {e["label"]}: earlier --model {earlier[e["key"]]["model"]} '
                            f'{" ".join(earlier[e["key"]]["args"])}, now --model {e["model"]} {" ".join(e["args"])}')
    if problems:
        raise ValueError(f'{path}: comparison {args.name} was run with other settings, and runs made with different '
                         f'settings must not be mixed in one table:\n  ' + '\n  '.join(problems) +
                         f'\nUse another --name, or delete {folder} to start this comparison afresh.')
    now = {e['key']: e for e in entries}
    merged = [now.get(e['key'], e) for e in old['runs']] + [e for e in entries if e['key'] not in earlier]
    report = old['report'] if not (args.reference or args.slices) else record['report']
    return {**old, 'runs': merged, 'report': report}


# ----------------------------------------------------------------------------- running

def training_done(checkpoint_dir: str, last_epoch: int) -> bool:
    """Whether the final epoch's networks (``<last_epoch>_net_*.pth``) or a latest state past it exist, or
    validation stopped the run early (--patience)."""
    if glob.glob(os.path.join(glob.escape(checkpoint_dir), f'{last_epoch}_net_*.pth')):
        return True
    state = os.path.join(checkpoint_dir, 'latest_state.pth')
    if not os.path.isfile(state):
        return False
    from util.checkpoint import safe_load
    counters = safe_load(state)['counters']
    return int(counters['epoch']) > last_epoch or bool(counters.get('validation', {}).get('stopped'))


def run_logged(cmd: list[str], log: str, quiet: bool) -> float:
    """Run ``cmd``, its output appended to ``log`` (and echoed unless ``quiet``); returns the wall time in s.
    RuntimeError with the output's tail when it fails."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    start = time.perf_counter()
    tail: list[str] = []
    with open(log, 'a') as f:
        f.write(f'$ {shlex.join(cmd)}\n')
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            f.write(line)
            tail = (tail + [line])[-40:]
            if not quiet:
                sys.stdout.write(line)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f'{shlex.join(cmd)} failed (exit {code}); log {log}:\n{"".join(tail)}')
    return time.perf_counter() - start


def measure_generator(test_args: list[str], n_slices: int) -> dict:
    """Parameters of the A -> B generator as loaded for testing (G, or G_A of a CycleGAN; total and frozen, summed
    over ensemble members), and the time per slice of the whole test-time path (batch 1, after two warm-up passes,
    SAM run on the slice as for a new patient, flip TTA and every ensemble member included) on the test device."""
    import torch
    from inference.test_time import EnsembleModel, create_test_model, run_test
    from options.ingredients import ensemble_names
    from options.test_options import TestOptions
    with contextlib.redirect_stdout(io.StringIO()):
        opt = TestOptions().parse(test_args)
        model = create_test_model(opt, ensemble_names(opt.name))
    members = model.members if isinstance(model, EnsembleModel) else [model]
    if opt.eval:
        model.eval()
    name = 'G_A' if 'G_A' in members[0].model_names else members[0].model_names[0]
    params = [p for m in members for p in m.unwrap(name).parameters()]
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, opt.input_nc, opt.crop_size, opt.crop_size, generator=gen) * 2 - 1).to(opt.device)
    y = (torch.rand(1, opt.output_nc, opt.crop_size, opt.crop_size, generator=gen) * 2 - 1).to(opt.device)
    batch = {'A': x, 'B': y, 'A_paths': ['timing'], 'B_paths': ['timing']}

    def sync() -> None:
        if opt.device.type == 'cuda':
            torch.cuda.synchronize(opt.device)

    def one() -> None:
        model.set_input(batch)
        run_test(model)
    for _ in range(2):
        one()
    sync()
    start = time.perf_counter()
    for _ in range(max(1, n_slices)):
        one()
    sync()
    seconds = (time.perf_counter() - start) / max(1, n_slices)
    device = str(opt.device) + (f' ({torch.cuda.get_device_name(opt.device)})' if opt.device.type == 'cuda' else '')
    return {'generator': name, 'params_total': sum(p.numel() for p in params),
            'params_frozen': sum(p.numel() for p in params if not p.requires_grad),
            'inference_ms': seconds * 1000, 'device': device}


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


def reuse_training(run: Run, checkpoints_dir: str, trained: dict) -> None:
    """A row whose training options equal an earlier row's of this call once parsed (they differ in test flags
    only, e.g. --tta, or reach the same settings through --recipe) copies that row's finished checkpoints instead
    of training the same network again (its test still uses its own flags: a recipe named on test.py's command
    line decides its own settings)."""
    for i, member in enumerate(run.members):
        args = run.member_train_args(i)
        resolved = vars(train_parser(args).parse_args(args))
        key = tuple(sorted((k, repr(v)) for k, v in resolved.items() if k not in TRAINING_NEUTRAL))
        source = trained.setdefault(key, member)
        target = os.path.join(checkpoints_dir, member)
        if source != member and not os.path.isdir(target) and os.path.isdir(os.path.join(checkpoints_dir, source)):
            print(f'[compare] {run.label}: trained as {source} (the same training flags): copying its checkpoints',
                  flush=True)
            shutil.copytree(os.path.join(checkpoints_dir, source), target,
                            ignore=shutil.ignore_patterns('*.lock', 'web'))


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
        if training_done(checkpoint_dir, last_epoch):
            print(f'[compare] {run.label}: reusing the trained {member} (epoch {last_epoch} done)', flush=True)
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
    metrics = os.path.join(result_dir, f'test_{run.test_epoch}', 'metrics.csv')
    if trained or not os.path.isfile(metrics):
        print(f'[compare] {run.label}: testing {",".join(run.members)}', flush=True)
        record['test_seconds'] = run_logged([sys.executable, TEST, *run.test_args],
                                            os.path.join(logs, f'{run.key}_test.log'), args.quiet)
    else:
        print(f'[compare] {run.label}: reusing the test results {metrics}', flush=True)
    if trained or not math.isfinite(record.get('inference_ms', math.nan)):
        record.update(measure_generator(run.test_args, args.time_slices))
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
