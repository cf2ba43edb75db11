"""compare.py's runs as train.py and test.py command lines: every run's flags checked against, and routed by, the
options parsers of its model (the planning itself, rows and ablations, is evaluation/comparison/plan.py).
"""
from __future__ import annotations

import argparse
import os
import shutil

from evaluation.comparison.plan import (
    FALSE_WORDS,
    TRUE_WORDS,
    ABLATIONS,
    NOT_COMPARED,
    PAPER_SHARED,
    RESERVED,
    TRAINING_NEUTRAL,
    TEST_ONLY,
    TRAIN_ONLY,
    Run,
    check_slice_names,
    row_shared,
    data_record,
    flatten,
    group_flags,
    model_and_flags,
    parse_model_args,
    parse_models,
)
from evaluation.comparison.results import run_name, safe_label
from util.parser_flags import find_option, has_option


def train_parser(tokens: list[str]) -> argparse.ArgumentParser:
    from options.train_options import TrainOptions
    return TrainOptions().build_parser(tokens)


def test_parser(tokens: list[str]) -> argparse.ArgumentParser:
    from options.test_options import TestOptions
    return TestOptions().build_parser(tokens)


def ablation_runs(spec: str, model: str, own: list[str], base: list[str]) -> list[Run]:
    """The runs of --ablation ``spec`` for ``model``; ``NAME=KEY1,KEY2`` keeps only those rows of the named
    ablation NAME (e.g. synthrad2025=mrnet,pix2pix,recipe)."""
    name, _, picked = spec.partition('=')
    if name in ABLATIONS:
        keys = [k.strip() for k in picked.split(',') if k.strip()]
        unknown = [k for k in keys if k not in [row[0] for row in ABLATIONS[name]]]
        if unknown:
            raise ValueError(f'--ablation "{spec}": {", ".join(unknown)} is not a row of {name} '
                             f'({", ".join(row[0] for row in ABLATIONS[name])})')
        runs = []
        for key, label, flags, *extra in ABLATIONS[name]:
            if keys and key not in keys:
                continue
            other = extra[0] if extra and extra[0] and extra[0] != model else None
            runs.append(Run(key, label, other or model, flags if other else own + flags,
                            folds=extra[1] if len(extra) > 1 else 0))
        return runs
    flag, eq, values = spec.partition('=')
    choices = [v.strip() for v in values.split(',') if v.strip()]
    if not eq or not flag or not choices:
        raise ValueError(f'--ablation "{spec}": use one of {", ".join(ABLATIONS)} or FLAG=V1,V2,...')
    parser = train_parser(['--model', model, *base, *own])
    action = find_option(parser, '--' + flag)
    if action is None:
        raise ValueError(f'--ablation "{spec}": --{flag} is not an option of --model {model}')
    runs = []
    for value in choices:
        if action.nargs == 0:  # a switch
            if value.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(f'--ablation "{spec}": --{flag} is a switch; use true/false values')
            flags = ['--' + flag] if value.lower() in TRUE_WORDS else []
        else:
            flags = ['--' + flag, value]
        runs.append(Run(safe_label(f'{flag}{value}'), f'{flag}={value}', model, own + flags))
    return runs


def make_runs(args: argparse.Namespace, base: list[str]) -> list[Run]:
    models = parse_models(args.models, bool(args.ablation))
    own = parse_model_args(args.model_args, models)
    if args.ablation:
        model, flags = model_and_flags(models[0])
        runs = ablation_runs(args.ablation, model, flags + own.get(models[0], []), base)
    else:
        runs = [Run(m, m, model_and_flags(m)[0], model_and_flags(m)[1] + own.get(m, [])) for m in models]
    if args.folds:
        if args.folds < 2:
            raise ValueError(f'--folds {args.folds}: use 2 or more')
        for run in runs:
            run.folds = run.folds or args.folds
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError(f'two runs would share a name: {", ".join(keys)}')
    for run in runs:
        run.name = run_name(args.name, run.key)
    return runs


def route(groups: dict[str, list[str]], parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags of ``groups`` that ``parser`` knows (minus ``skip``), as tokens."""
    return flatten({f: v for f, v in groups.items() if has_option(parser, f) and f not in skip})


def typed_values(groups: dict[str, list[str]], parsers: list[argparse.ArgumentParser]) -> dict:
    """{dest: value} of each flag as the first parser that knows it reads it (so 1e-4 equals 0.0001)."""
    out = {}
    for flag, values in groups.items():
        parser = next(p for p in parsers if has_option(p, flag))
        action = find_option(parser, flag)
        value = getattr(parser.parse_known_args([flag, *values])[0], action.dest)
        out[action.dest] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def plan(args: argparse.Namespace, shared_tokens: list[str]) -> tuple[list[Run], dict]:
    """Runs with their train.py/test.py arguments, and the comparison's record for shared_options.json.

    Raises ValueError for an unknown model or option, an option compare.py sets itself, or a dataset mode
    other than triplanar_aligned.
    """
    user = group_flags(shared_tokens)
    reserved = [f for f in user if f in RESERVED]
    if reserved:
        raise ValueError(f'{", ".join(reserved)}: set by compare.py for every run; use its own --name, '
                         f'--dataroot, --checkpoints_dir and --results_dir')
    groups = {**{f: v for f, v in PAPER_SHARED.items() if f not in user}, **user}
    dataroot = os.path.abspath(args.dataroot) if args.dataroot else None
    runs = make_runs(args, flatten(groups))
    parsers = []
    for run in runs:
        common = ['--model', run.model, '--name', run.name, '--checkpoints_dir', args.checkpoints_dir]
        if dataroot:
            common += ['--dataroot', dataroot]
        shared = row_shared(groups, user, run.model)
        tp = train_parser(common + flatten(shared) + run.args)
        sp = test_parser(common + flatten(shared) + run.args)
        unknown = [f for f in group_flags(run.args) if not has_option(tp, f) and not has_option(sp, f)]
        if unknown:
            raise ValueError(f'{run.label}: {", ".join(unknown)} is not an option of --model {run.model}')
        own = group_flags(run.args)
        run.train_args = common + route(shared, tp, TEST_ONLY) + route(own, tp, TEST_ONLY)
        run.test_epoch = 'best' if tp.parse_args(run.train_args).val_freq > 0 else 'latest'
        test_common = [t if t != run.name else ','.join(run.members) for t in common]
        run.test_args = (test_common + ['--results_dir', args.results_dir, '--epoch', run.test_epoch, '--phase',
                                        'test'] + route(shared, sp, TRAIN_ONLY) + route(own, sp, TRAIN_ONLY))
        parsers += [tp, sp]
    unknown = [f for f in groups if not any(has_option(p, f) for p in parsers)]
    if unknown:
        raise ValueError(f'{", ".join(unknown)}: not an option of train.py or test.py for '
                         f'{", ".join(sorted({r.model for r in runs}))} (give full flag names)')
    opt = train_parser(runs[0].train_args).parse_args(runs[0].train_args)
    if opt.dataset_mode not in ('triplanar_aligned', 'patch3d'):
        raise ValueError(f'compare.py scores volumes: it needs --dataset_mode triplanar_aligned (or the 3D row\'s '
                         f'patch3d; got {opt.dataset_mode})')
    record = {'tag': args.name, 'mode': 'ablation' if args.ablation else 'models',
              'shared': {k: v for k, v in typed_values(groups, parsers).items() if k not in NOT_COMPARED},
              'data': data_record(opt, dataroot), 'external': [],
              'report': {'reference': args.reference or runs[0].label,
                         'slices': [s.strip() for s in args.slices.split(',') if s.strip()]}}
    if args.reference and args.reference not in [r.label for r in runs]:
        raise ValueError(f'--reference {args.reference}: not a run of this call ({", ".join(r.label for r in runs)})')
    check_slice_names(record['report']['slices'], record['data'])
    return runs, record


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
