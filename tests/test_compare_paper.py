"""scripts/compare.py --models paper: the eight rows of the paper's Tables II-III (MRNet, pix2pix, CycleGAN and
the five baselines as generators of pix2pix's cGAN) on tiny volumes, one training step each."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_script
from generator_fixtures import SWIN_FLAGS, VIT_FLAGS
from evaluation.comparison import plan as comparison_plan
from options import comparison_options
from scripts import compare
from test_compare import COMPARE, TINY, make_data, read_table

PAPER = ['mrnet', 'pix2pix', 'cycle_gan', 'tcgan', 'transunet', 'swin_unet', 'resvit', 'ppt']
# the baselines' hidden size flags reach only the runs whose generator knows them
TINY_BASELINES = [*VIT_FLAGS, *SWIN_FLAGS, '--tcgan_dim', '64', '--tcgan_depths', '1,1,1']


def option_table(path: Path) -> dict[str, str]:
    """{option: value} of an options dump (train_opt.txt)."""
    rows = (line.split(':', 1) for line in path.read_text().splitlines() if ':' in line)
    return {k.strip(): v.split()[0] if v.split() else '' for k, v in rows}


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


def test_compare_paper_writes_eight_rows(tmp_path: Path):
    make_data(tmp_path / 'data')
    run_script(COMPARE, '--dataroot', str(tmp_path / 'data'), '--name', 'paper', '--models', 'paper', '--quiet',
               '--time_slices', '1', *TINY, *TINY_BASELINES, cwd=tmp_path, timeout=1800)
    folder = tmp_path / 'results' / 'compare_paper'
    table = read_table(folder / 'table.csv')
    assert [r['model'] for r in table] == PAPER
    assert len({r['n_slices'] for r in table}) == 1 and int(table[0]['n_slices']) > 0   # one test split for all
    assert all(float(r['slice_psnr_mean']) > 0 for r in table)
    for key in PAPER[3:]:       # each baseline trained as --model pix2pix --netG <key> with the shared D
        saved = option_table(tmp_path / 'checkpoints' / f'compare_paper_{key}' / 'train_opt.txt')
        assert (saved['model'], saved['netG'], saved['netD'], saved['gan_mode']) == ('pix2pix', key, 'basic', 'lsgan')
    md = (folder / 'table.md').read_text()
    assert all(f'| {name} |' in md for name in PAPER)


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
