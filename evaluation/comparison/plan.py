"""How one ``scripts/compare.py`` call becomes runs: its rows (models, generators run in pix2pix's cGAN, named
ablations or FLAG=V1,V2 sweeps, folds), the shared options every row gets (the paper's section IV-B unless given),
and the comparison's record of shared options and data for ``shared_options.json`` (merged with a TAG's earlier
record, refused when its settings differ). Each row's train.py and test.py arguments, checked against the options
parsers, are options/comparison_options.py's; running the rows is compare.py's."""
from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass

from evaluation.comparison.results import option_differences, options_path
from util.direction import source_target
from util.json_file import read_json

# the shared options every run gets unless the command line says otherwise (the paper's section IV-B)
PAPER_SHARED = {'--dataset_mode': ['triplanar_aligned'], '--crop_size': ['256'], '--load_size': ['256'],
                '--input_nc': ['3'], '--output_nc': ['3'], '--batch_size': ['4'], '--lr': ['0.0001'],
                '--beta1': ['0.5'], '--n_epochs': ['40'], '--n_epochs_decay': ['0'], '--seed': ['2024'],
                '--netD': ['basic'], '--n_layers_D': ['3'], '--gan_mode': ['lsgan'], '--display_id': ['0'],
                '--val_freq': ['1']}


# set by compare.py itself for every run
RESERVED = ('--name', '--model', '--dataroot', '--checkpoints_dir', '--results_dir', '--continue_train', '--epoch',
            '--epoch_count', '--phase', '--split', '--suffix', '--load_iter')


# passed to train.py only: test.py scores the whole test split, one slice at a time
TRAIN_ONLY = ('--max_dataset_size', '--batch_size')


# options that do not change what a run learns or scores; left out of the check of a TAG's shared options
NOT_COMPARED = ('gpu_ids', 'num_threads', 'display_id', 'display_freq', 'display_ncols', 'display_server',
                'display_env', 'display_port', 'update_html_freq', 'print_freq', 'no_html', 'save_latest_freq',
                'save_epoch_freq', 'save_by_iter', 'verbose', 'open_volumes', 'cache_dir', 'display_winsize')


# the 3D row (--model unet3d: 3D patches, sliding windows at test time): flags of slices that do not apply to it,
# and the paper's shared defaults it replaces with its own (batch 2, beta1 0.9, as models/unet3d_model.py sets them;
# given on the command line they still apply). --max_dataset_size counts slices; a 3D epoch is
# --patches_per_subject patches per subject: compare rows of both kinds at equal time (--time_budget_min).
VOLUME_MODELS = ('unet3d',)
SLICE_ONLY = ('--dataset_mode', '--crop_size', '--load_size', '--input_nc', '--output_nc', '--planes',
              '--min_foreground', '--context_slices', '--augment', '--preprocess', '--max_dataset_size')
VOLUME_OWN = ('--batch_size', '--beta1')


# the rows of the paper's Tables II and III, MRNet (the reference) first
PAPER_MODELS = ('mrnet', 'pix2pix', 'cycle_gan', 'tcgan', 'transunet', 'swin_unet', 'resvit', 'ppt')


# the cGAN that runs a generator of models/generators/ named in --models
GENERATOR_HOST = 'pix2pix'


# named ablations: (key, label, flags)
ABLATIONS = {
    'losses': [('gan_l1', 'GAN + L1', ['--lambda_feature', '0', '--lambda_mask', '0']),
               ('gan_l1_feature_mask', 'GAN + L1 + feature + mask', [])],
    'sam': [('sam', 'with SAM', []), ('no_sam', 'without SAM', ['--no_sam'])],
    # what the SynthRAD2025 entries added, each alone, and the preset (docs/beyond_the_paper.md); a fifth
    # field runs a row with another model, a sixth trains that many folds and tests their ensemble
    'synthrad2025': [('mrnet', 'MRNet (paper)', []),
                     ('pix2pix', 'pix2pix', [], 'pix2pix'),
                     ('body', 'MRNet + body loss (--loss_region body --body_margin_voxels 1)',
                      ['--loss_region', 'body', '--body_margin_voxels', '1']),
                     ('recipe', 'MRNet --recipe synthrad2025', ['--recipe', 'synthrad2025']),
                     ('tta', 'MRNet + flip TTA (--tta flip)', ['--tta', 'flip']),
                     ('context', 'MRNet + 2.5D (--context_slices 1)', ['--context_slices', '1']),
                     ('sam_perceptual', 'MRNet + SAM perceptual (--lambda_sam_perceptual 10)',
                      ['--lambda_sam_perceptual', '10']),
                     ('ensemble', 'MRNet, 2-fold ensemble (--folds 2)', [], None, 2),
                     ('unet3d', '3D U-Net (--model unet3d: 3D patches, sliding windows)', [], 'unet3d')],
}


# flags of test.py only: a row differing from an earlier one by these alone reuses its training
TEST_ONLY = ('--tta', '--ensemble_fuse')


# options that do not change what training computes (compared when a row may reuse another's training)
TRAINING_NEUTRAL = ('name', 'tta', 'recipe')


TRUE_WORDS, FALSE_WORDS = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


@dataclass
class Run:
    """One model configuration of the comparison: ``key`` names its files, ``label`` its table row."""
    key: str
    label: str
    model: str
    args: list[str]             # flags of its own (--model_args, the ablation's setting)
    name: str = ''              # experiment name compare_TAG_<key>
    train_args: list[str] | None = None
    test_args: list[str] | None = None
    test_epoch: str = 'latest'  # 'best' when the runs are validated (--val_freq > 0)
    folds: int = 0              # > 0: train every fold (--n_folds K --fold i) and test their ensemble

    @property
    def members(self) -> list[str]:
        """The experiments trained for this row: one, or one per fold (``<name>_fold<i>``)."""
        return [f'{self.name}_fold{i}' for i in range(self.folds)] if self.folds else [self.name]

    def member_train_args(self, i: int) -> list[str]:
        if not self.folds:
            return self.train_args
        args = list(self.train_args)
        args[args.index('--name') + 1] = self.members[i]
        return args + ['--n_folds', str(self.folds), '--fold', str(i)]

    def entry(self, folder: str, results_dir: str, checkpoints_dir: str) -> dict:
        """Its record in shared_options.json (paths relative to the comparison folder)."""
        from inference.test_time import ensemble_result_name
        return {'key': self.key, 'label': self.label, 'model': self.model, 'args': self.args, 'name': self.name,
                'test_dir': os.path.relpath(os.path.join(results_dir, ensemble_result_name(self.members),
                                                         f'test_{self.test_epoch}'), folder),
                'loss_log': os.path.relpath(os.path.join(checkpoints_dir, self.members[0], 'loss_log.txt'), folder)}


def group_flags(tokens: list[str]) -> dict[str, list[str]]:
    """Shared tokens -> {'--flag': [values]} in order (``--flag=value`` accepted; a repeated flag: last wins)."""
    groups: dict[str, list[str]] = {}
    flag = None
    for token in tokens:
        if token.startswith('--'):
            flag, eq, value = token.partition('=')
            groups.pop(flag, None)
            groups[flag] = [value] if eq else []
        elif flag is None:
            raise ValueError(f'unexpected argument "{token}": shared options are --flag [value] pairs')
        else:
            groups[flag].append(token)
    return groups


def flatten(groups: dict[str, list[str]]) -> list[str]:
    return [t for flag, values in groups.items() for t in (flag, *values)]


def row_shared(groups: dict[str, list[str]], user: dict[str, list[str]], model: str) -> dict[str, list[str]]:
    """The shared flags a row of ``model`` gets: all of ``groups`` for a slice model; for a 3D one (VOLUME_MODELS)
    without SLICE_ONLY, and without the paper's VOLUME_OWN defaults unless the command line (``user``) gave them."""
    if model not in VOLUME_MODELS:
        return groups
    return {f: v for f, v in groups.items() if f not in SLICE_ONLY and (f not in VOLUME_OWN or f in user)}


def parse_models(text: str | None, ablation: bool) -> list[str]:
    """Names of --models ('paper': PAPER_MODELS), checked against models/*_model.py and models/generators/;
    ValueError for an unknown or repeated one."""
    import models
    from models.generators import available_generators
    text = ','.join(PAPER_MODELS) if text == 'paper' else text
    names = [m.strip() for m in (text or ('mrnet' if ablation else 'mrnet,pix2pix,cycle_gan')).split(',') if m.strip()]
    available = models.available_models() + available_generators()
    unknown = [m for m in names if m not in available]
    if unknown:
        raise ValueError(f'--models: unknown model(s) {", ".join(unknown)}; available: {", ".join(available)} '
                         f'or "paper"')
    if len(set(names)) != len(names):
        raise ValueError(f'--models lists a model twice: {text}')
    if ablation and len(names) != 1:
        raise ValueError(f'--ablation varies one model; --models names {len(names)} ({text})')
    if 'test' in names:
        raise ValueError('--models: "test" is a test-only model and cannot be trained')
    return names


def model_and_flags(name: str) -> tuple[str, list[str]]:
    """(--model, flags) of a --models name: a model as is, a generator of models/generators/ in pix2pix's cGAN."""
    import models
    return (name, []) if name in models.available_models() else (GENERATOR_HOST, ['--netG', name])


def parse_model_args(items: list[str], models: list[str]) -> dict[str, list[str]]:
    """--model_args MODEL="FLAGS" -> {model: [flags]}."""
    out: dict[str, list[str]] = {}
    for item in items:
        model, eq, flags = item.partition('=')
        if not eq or model not in models:
            raise ValueError(f'--model_args "{item}": expected MODEL="FLAGS" with MODEL one of {", ".join(models)}')
        out[model] = out.get(model, []) + shlex.split(flags)
    return out


def check_slice_names(names: list[str], data: dict) -> None:
    """ValueError for a --slices name that cannot be a test slice: ``<subject>_<plane><index>`` with a test
    subject and a tested plane (checked before training, not after)."""
    for name in names:
        m = re.fullmatch(r'(.+)_([xyz])(\d+)', name)
        if not m or m.group(1) not in data['test_subjects'] or m.group(2) not in data['planes']:
            raise ValueError(f'--slices: "{name}" is not a test slice name <subject>_<plane><index> with a test '
                             f'subject ({", ".join(data["test_subjects"][:5])}...) and a plane of {data["planes"]}')


def data_record(opt: argparse.Namespace, dataroot: str | None) -> dict:
    """Dataroot (the demo dataset when none is given, made now), modalities, intensity settings and the test
    subjects of the split (written now with --split_seed when the dataroot has none)."""
    from data.splits import list_subjects, load_split
    from data.triplanar_aligned_dataset import resolve_dataroot
    opt.dataroot = dataroot
    root = os.path.abspath(resolve_dataroot(opt))
    source, target = source_target(opt)
    subjects = list_subjects(root)
    return {'dataroot': root, 'source': source, 'target': target, 'ct_window': list(opt.ct_window),
            'mr_percentiles': list(opt.mr_percentiles), 'planes': opt.planes,
            'test_subjects': load_split(root, 'test', subjects, opt.split_seed),
            'train_subjects': load_split(root, 'train', subjects, opt.split_seed)}


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
