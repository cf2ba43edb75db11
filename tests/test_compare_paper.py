"""scripts/compare.py --models paper: the eight rows of the paper's Tables II-III (MRNet, pix2pix, CycleGAN and
the five baselines as generators of pix2pix's cGAN) planned with the shared discriminator and GAN loss. test_compare.py
runs them end to end."""
from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.comparison import plan as comparison_plan
from options import comparison_options
from scripts import compare
from test_compare import MODELS as PAPER, make_data


def test_paper_names_the_eight_rows_and_runs_baselines_in_the_cgan(tmp_path: Path):
    assert comparison_plan.parse_models('paper', False) == PAPER
    runs = {r.key: r for r in comparison_options.make_runs(compare.build_parser().parse_args(
        ['--name', 't', '--models', 'paper', '--model_args', 'resvit=--pretrained_G g.pth']), [])}
    assert list(runs) == PAPER
    assert (runs['mrnet'].model, runs['mrnet'].args) == ('mrnet', [])
    assert (runs['transunet'].model, runs['transunet'].args) == ('pix2pix', ['--netG', 'transunet'])
    assert (runs['resvit'].model, runs['resvit'].args) == ('pix2pix', ['--netG', 'resvit', '--pretrained_G', 'g.pth'])
    with pytest.raises(ValueError, match=r'--models: unknown model\(s\) vit; available: .*transunet.* or "paper"'):
        comparison_plan.parse_models('mrnet,vit', False)


def test_every_paper_row_trains_with_the_shared_lsgan_patchgan(tmp_path: Path):
    """The paper held the discriminator constant: every row of --models paper, the five baselines included (whose
    --model pix2pix would otherwise default to the vanilla GAN loss), trains against the 70x70 PatchGAN (netD basic,
    3 layers) with the LSGAN loss, and a user's own --gan_mode reaches every row too."""
    make_data(tmp_path / 'data')
    for shared, gan_mode in (([], 'lsgan'), (['--gan_mode', 'vanilla'], 'vanilla')):
        args = compare.build_parser().parse_args(['--name', 't', '--models', 'paper', '--dataroot',
                                                  str(tmp_path / 'data'), '--checkpoints_dir', str(tmp_path / 'ck')])
        runs, record = comparison_options.plan(args, shared)
        assert [r.key for r in runs] == PAPER
        for run in runs:
            opt = comparison_options.train_parser(run.train_args).parse_args(run.train_args)
            assert (opt.netD, opt.n_layers_D, opt.gan_mode) == ('basic', 3, gan_mode), run.key
        assert record['shared']['gan_mode'] == gan_mode
