"""What the SynthRAD2025 winners added beyond the paper, as options of the shared loop: the ``--recipe`` preset,
test-time augmentation (``--tta``), the input width of a 2.5D input, and what test.py takes from the checkpoint.

The ingredients themselves live with what they change: ``--context_slices`` and ``--n_folds/--fold`` in
data/triplanar_aligned_dataset.py, ``--loss_region/--body_dilation`` in models/losses/body_loss.py,
``--lambda_sam_perceptual`` in models/losses/sam_perceptual.py, flip TTA and ensembles in inference/test_time.py.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from inference.loading import stored_training_options
from util.parser_flags import find_option, has_option

# --recipe NAME: defaults it sets (flags given on the command line still win). synthrad2025 was chosen on a third
# synthetic set kept for tuning (docs/beyond_the_paper.md), keeping what helped there at both budgets: the body
# loss (about -40 % / -25 % fused MAE at the short / long budget) with a margin of one source voxel, which is what
# reassembly blends into the scored mask's edge at any resolution (on par there with the best pixel margins,
# 4-6 px, which are about one voxel of that data and would be 4-6 voxels on 1 mm data). Flip TTA helped there at
# the long budget only (-2 %), 2.5D input and the SAM perceptual loss with a random SAM not at all; an ensemble
# needs several trainings (compare.py --folds, test.py --name a,b), not a training preset.
RECIPES = {
    'paper': {},
    'synthrad2025': {'loss_region': 'body', 'body_margin_voxels': 1},
}
TTA_MODES = ('none', 'flip')
# options test.py, compare.py and predict take from the checkpoint when the command line does not give them
INHERITED = ('context_slices', 'tta', 'recipe', 'patch_size', 'target_spacing', 'unet3d_max_pool')


def add_ingredient_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument('--recipe', default='paper', choices=sorted(RECIPES),
                        help='preset of the ingredients beyond the paper: "paper" (default, the paper\'s recipe) or '
                             '"synthrad2025" (' + ', '.join(f'--{k} {v}' for k, v in RECIPES['synthrad2025'].items())
                             + '); flags given explicitly win')
    parser.add_argument('--tta', default='none', choices=TTA_MODES,
                        help='test-time augmentation of test.py and predict: "flip" averages the predictions of the '
                             'slice and its in-plane flips (left-right, up-down, both) and adds their spread to the '
                             'disagreement map; stored in the checkpoint when given at training')
    return parser


def apply_recipe(parser: argparse.ArgumentParser, args: Sequence[str] | None,
                 is_train: bool) -> argparse.ArgumentParser:
    """Set the defaults of ``--recipe``. Training refuses a recipe that sets options the chosen model does not take
    (cycle_gan has no body loss): a recipe recorded in train_opt.txt but silently not applied would mislead.
    At test time the training-only options are absent and the recipe only names what the checkpoint was."""
    opt, _ = parser.parse_known_args(args)
    settings = RECIPES[opt.recipe]
    missing = [k for k in settings if not has_option(parser, '--' + k)]
    if is_train and missing:
        sets = ' '.join(f'--{k} {v}' for k, v in settings.items())
        raise ValueError(f'--recipe {opt.recipe} sets {sets}, but --model {opt.model} does not take '
                         f'{", ".join("--" + k for k in missing)}; train it without --recipe, or choose a model '
                         'that takes them (mrnet, pix2pix)')
    parser.set_defaults(**{k: v for k, v in settings.items() if k not in missing})
    return parser


def finish(opt: argparse.Namespace) -> argparse.Namespace:
    """Derived settings: a 2.5D input (--context_slices K > 0) has 2K+1 channels, whatever --input_nc says.
    Only the datasets that read 2.5D input (data/triplanar_aligned_dataset.py) have the flag."""
    k = getattr(opt, 'context_slices', 0)
    if k > 0:
        opt.input_nc = 2 * k + 1
    return opt


def given_flags(parser: argparse.ArgumentParser, args: Sequence[str]) -> set[str]:
    """Destinations of the options spelt out in ``args`` (``--flag v`` or ``--flag=v``)."""
    given = set()
    for token in args:
        flag = token.split('=', 1)[0]
        action = find_option(parser, flag)
        if action is not None:
            given.add(action.dest)
    return given


def ensemble_names(name: str) -> list[str]:
    """--name a,b,c -> ['a', 'b', 'c'] (one name: a one-member list)."""
    names = [n.strip() for n in name.split(',') if n.strip()]
    if not names:
        raise ValueError(f'--name "{name}": no experiment name')
    if len(set(names)) != len(names):
        raise ValueError(f'--name {name}: an ensemble lists an experiment twice')
    return names


def inherit(opt: argparse.Namespace, parser: argparse.ArgumentParser, args: Sequence[str]) -> argparse.Namespace:
    """test.py: the INHERITED options of the (first) experiment's checkpoint where the command line is silent."""
    given = given_flags(parser, args)
    if 'recipe' in given:       # a recipe named on the command line decides its own settings
        given |= set(RECIPES[opt.recipe])
    epoch = f'iter_{opt.load_iter}' if opt.load_iter > 0 else opt.epoch
    stored = stored_training_options(opt.checkpoints_dir, ensemble_names(opt.name)[0], epoch)
    for key in INHERITED:
        if key in stored and key not in given and hasattr(opt, key):
            setattr(opt, key, stored[key])
    return finish(opt)
