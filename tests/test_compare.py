"""scripts/compare.py end to end at CI size (tiny networks, tiny demo volumes, one or two iterations): a comparison
of the paper's eight rows (--models paper: MRNet, pix2pix, CycleGAN and the five baselines as generators of pix2pix's
cGAN), an ablation with a run resumed from a half-finished training, reuse of finished
runs, outside results appended with scripts/evaluate.py, and the errors for bad input."""
from __future__ import annotations

import csv
import math
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

import data.demo_data as demo
from conftest import ROOT, run_script
from generator_fixtures import SWIN_FLAGS, VIT_FLAGS
from options import comparison_options
from scripts import compare
from evaluation.comparison.results import (Result, csv_row, markdown_tables, option_differences, rank_marks,
                                           read_metrics_csv, table_sections)
from util.json_file import read_json
from evaluation.comparison.figures import choose_slices, roi_box
from evaluation.metrics import psnr
from util.training_log import read_training_log

COMPARE = str(ROOT / 'scripts' / 'compare.py')
EVALUATE = str(ROOT / 'scripts' / 'evaluate.py')
TRAIN = str(ROOT / 'train.py')
TAG = 'ci'
MODELS = ['mrnet', 'pix2pix', 'cycle_gan', 'tcgan', 'transunet', 'swin_unet', 'resvit', 'ppt']    # --models paper
# shared by every run: tiny networks, one or two iterations, CPU; the --sam_* flags reach MRNet only
# (axial slices only, so each model tests 10 slices at 256 x 256)
TINY = ['--ngf', '4', '--ndf', '4', '--n_epochs', '1', '--max_dataset_size', '1', '--batch_size', '1',
        '--planes', 'z', '--gpu_ids', '-1', '--num_threads', '0', '--print_freq', '1', '--sam_input_size', '64',
        '--sam_embed_dim', '32', '--sam_depth', '2', '--sam_num_heads', '2', '--sam_global_attn_indexes', '1']
# the baselines' hidden size flags reach only the runs whose generator knows them
TINY_BASELINES = [*VIT_FLAGS, *SWIN_FLAGS, '--tcgan_dim', '64', '--tcgan_depths', '1,1,1']
SHARED = [*TINY, *TINY_BASELINES]           # the shared flags of the module's comparison


def make_data(root: Path) -> Path:
    """Three demo subjects of 12 x 14 x 10 voxels (16 mm voxels): one per split."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, 'SHAPE', (12, 14, 10))
        mp.setattr(demo, 'SPACING_ISO', (16.0, 16.0, 16.0))
        mp.setattr(demo, 'SPACING_ANISO', (16.0, 16.0, 20.0))
        demo.make_synthrad(str(root), 3, 2024)
    return root


@pytest.fixture(scope='module')
def base(tmp_path_factory) -> Path:
    """A folder with the demo data in data/."""
    folder = tmp_path_factory.mktemp('compare')
    make_data(folder / 'data')
    return folder


@pytest.fixture(scope='module')
def comparison(base: Path) -> Path:
    """A finished comparison of the paper's eight rows in <base>/results/compare_ci; returns <base>."""
    data = base / 'data'
    run_script(COMPARE, '--dataroot', str(data), '--name', TAG, '--models', 'paper', '--quiet',
               '--time_slices', '1', *SHARED, cwd=base, timeout=1800)
    return base


def option_table(path: Path) -> dict[str, str]:
    """{option: value} of an options dump (train_opt.txt)."""
    rows = (line.split(':', 1) for line in path.read_text().splitlines() if ':' in line)
    return {k.strip(): v.split()[0] if v.split() else '' for k, v in rows}


def html_references(page: Path) -> list[Path]:
    text = page.read_text()
    return [page.parent / unquote(r) for r in re.findall(r'(?:src|href)="([^"]+)"', text)]


def markdown_rows(text: str, title: str) -> list[list[str]]:
    """Body rows of the pipe table under '## title'."""
    section = text.split(f'## {title}', 1)[1].split('\n## ', 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith('|')]
    return [[c.strip() for c in ln.strip('|').split(' | ')] for ln in lines[2:]]


def read_table(path: Path) -> list[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_comparison_writes_every_file(comparison: Path):
    folder = comparison / 'results' / f'compare_{TAG}'
    table = read_table(folder / 'table.csv')
    assert [r['model'] for r in table] == MODELS
    for model, row in zip(MODELS, table):
        # each run is a normal experiment, tested on the whole test split
        generator = 'G_A' if model == 'cycle_gan' else 'G'
        assert (comparison / 'checkpoints' / f'compare_{TAG}_{model}' / f'latest_net_{generator}.pth').is_file()
        test_dir = comparison / 'results' / f'compare_{TAG}_{model}' / 'test_best'
        metrics = read_metrics_csv(str(test_dir / 'metrics.csv'))
        slices = [r for r in metrics if r['level'] == 'slice']
        assert int(row['n_slices']) == len(slices) == 10 and int(row['n_subjects']) == 1
        psnrs = np.array([r['psnr'] for r in slices])
        assert float(row['slice_psnr_mean']) == pytest.approx(psnrs.mean())
        assert float(row['slice_psnr_std']) == pytest.approx(psnrs.std())
        z_ssim = [r['ssim'] for r in slices if r['plane'] == 'z']
        assert float(row['slice_ssim_z_mean']) == pytest.approx(np.mean(z_ssim))
        fused = next(r for r in metrics if r['level'] == 'volume' and r['plane'] == 'fused')
        assert float(row['volume_mae_fused_mean']) == pytest.approx(fused['mae'])
        assert float(row['volume_ssim_z_std']) == 0.0  # one test subject
        assert 'slice_psnr_x_mean' not in row           # planes that were not tested get no columns
        assert float(row['train_seconds']) > 0 and float(row['inference_ms_per_slice']) > 0
    params = {r['model']: (float(r['params_total']), float(r['params_frozen'])) for r in table}
    assert 0 < params['mrnet'][1] < params['mrnet'][0]            # the frozen SAM counts, and is named
    assert params['pix2pix'][1] == params['cycle_gan'][1] == 0
    for key in MODELS[3:]:      # each baseline trained as --model pix2pix --netG <key> with the shared D
        saved = option_table(comparison / 'checkpoints' / f'compare_{TAG}_{key}' / 'train_opt.txt')
        assert (saved['model'], saved['netG'], saved['netD'], saved['gan_mode']) == ('pix2pix', key, 'basic', 'lsgan')

    md = (folder / 'table.md').read_text()
    for title in ('Per-slice PSNR and SSIM', 'SynthRAD2023 volume metrics', 'Cost'):
        assert [r[0] for r in markdown_rows(md, title)] == MODELS
    shown = {r['model']: f'{float(r["slice_psnr_mean"]):.2f}' for r in table}   # PSNR as the table shows it
    ranked = sorted(set(shown.values()), key=float, reverse=True)
    for model, cell in ((r[0], r[1]) for r in markdown_rows(md, 'Per-slice PSNR and SSIM')):
        value = shown[model]
        expected = f'**{value}**' if value == ranked[0] else f'<u>{value}</u>' if value == ranked[1] else value
        assert cell.startswith(expected + ' ±'), (model, cell)

    page = folder / 'index.html'
    refs = html_references(page)
    assert refs and all(p.is_file() for p in refs), [p for p in refs if not p.is_file()]
    names = {p.name for p in refs}
    assert {'loss_curves.png', 'psnr_by_plane.png', 'ssim_by_plane.png'} <= names
    strips = sorted(n for n in names if n.startswith('strip_'))
    assert 1 <= len(strips) <= 3
    for p in set(refs):
        with Image.open(p) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    html = page.read_text()
    assert '<b>' in html and '<u>' in html and 'worst PSNR of mrnet' in html
    options = read_json(str(folder / 'shared_options.json'))
    assert options['shared']['n_epochs'] == 1 and options['shared']['lr'] == 0.0001
    assert options['data']['test_subjects'] == ['demo002']


def test_training_log_for_programs_says_what_the_text_log_says(comparison: Path):
    """Every validated run's loss_log.jsonl: the iterations and validations of its loss_log.txt; compare.py's
    time per iteration is the mean of the iteration records only."""
    for model in MODELS:
        ckpt = comparison / 'checkpoints' / f'compare_{TAG}_{model}'
        text = (ckpt / 'loss_log.txt').read_text().splitlines()
        records = read_training_log(str(ckpt / 'loss_log.jsonl'))
        iterations = [r for r in records if r['kind'] == 'iteration']
        assert [line for line in text if line.startswith('(epoch')] == [
            f"(epoch: {r['epoch']}, iters: {r['iters']}, time: {r['time']:.3f}, data: {r['data']:.3f}) " +
            ' '.join(f'{k}: {v:.3f}' for k, v in r['losses'].items()) for r in iterations]
        validations = [r for r in records if r['kind'] == 'validation']
        logged = [re.match(r'\(validation epoch: (\d+), time: ([\d.]+) s\)', line) for line in text
                  if line.startswith('(validation')]
        assert [int(m.group(1)) for m in logged] == [r['epoch'] for r in validations]
        assert all(abs(float(m.group(2)) - r['seconds']) <= 0.055 for m, r in zip(logged, validations))  # 0.1 / 0.01
        assert len(validations) == 1 and validations[0]['metric'] in validations[0]['scores']
        record = read_json(str(comparison / 'results' / f'compare_{TAG}' / 'runs' / f'{model}.json'))
        assert iterations and record['iteration_seconds'] == \
            pytest.approx(sum(r['time'] for r in iterations) / len(iterations))
        # the cost columns: the first step's FLOPs and the session's peak as train.py logged them, test.py's own
        # model time per volume and peak from its cost.json
        (flops,) = [r['step_flops'] for r in records if r['kind'] == 'flops']
        (end,) = [r for r in records if r['kind'] == 'end']
        cost = read_json(str(comparison / 'results' / f'compare_{TAG}_{model}' / 'test_best' / 'cost.json'))
        assert (record['step_flops'], record['train_images'], record['train_flops']) == (flops, 1, flops)
        assert (record['train_peak_rss_mib'], record['test_peak_rss_mib']) == (end['peak_rss_mib'],
                                                                               cost['peak_rss_mib'])
        assert cost['volumes'] == 1 and record['volume_seconds'] == cost['predict_seconds'] > 0


def test_strip_captions_are_the_psnr_of_the_shown_slices(comparison: Path):
    """The strip of the worst slice names each model's PSNR; recompute one from the written volumes."""
    import nibabel as nib
    from util.geometry import Geometry
    from util.slicing import take_slice
    html = (comparison / 'results' / f'compare_{TAG}' / 'index.html').read_text()
    m = re.search(r'(demo002_([xyz])(\d{3})) \(worst PSNR of mrnet[^;]*\); PSNR of this slice: mrnet ([\d.]+) dB', html)
    assert m, 'no caption for the worst slice'
    plane, index = m.group(2), int(m.group(3))

    def cut(path: Path) -> np.ndarray:
        img = nib.load(str(path))
        return take_slice(Geometry.of(img).to_canonical(img.get_fdata(dtype=np.float32)), 'xyz'.index(plane), index)
    volumes = comparison / 'results' / f'compare_{TAG}_mrnet' / 'test_best' / 'volumes'
    pred = cut(volumes / f'demo002_fake_B_{plane}.nii.gz')
    truth = cut(comparison / 'data' / 'demo002' / 'ct.nii.gz')
    expected = psnr(np.clip(pred, -1024, 3000), np.clip(truth, -1024, 3000), 4024.0)
    assert float(m.group(4)) == pytest.approx(expected, abs=0.006)


def test_second_call_reuses_finished_runs(comparison: Path):
    folder = comparison / 'results' / f'compare_{TAG}'
    logs = {p.name: p.stat().st_size for p in (folder / 'logs').iterdir()}
    proc = run_script(COMPARE, '--dataroot', str(comparison / 'data'), '--name', TAG, '--models', ','.join(MODELS),
                      '--quiet', *SHARED, cwd=comparison)
    assert proc.stdout.count('reusing the trained') == 8 and proc.stdout.count('reusing the test results') == 8
    assert 'training compare_' not in proc.stdout and 'testing compare_' not in proc.stdout
    assert {p.name: p.stat().st_size for p in (folder / 'logs').iterdir()} == logs
    assert all(read_json(str(folder / 'runs' / f'{m}.json'))['train_sessions'] == 1 for m in MODELS)


def test_outside_volumes_join_the_table(comparison: Path, tmp_path: Path):
    """pix2pix's own fused volumes scored by evaluate.py give exactly pix2pix's fused volume metrics."""
    base = tmp_path / 'copy'
    shutil.copytree(comparison, base)
    volumes = base / 'results' / f'compare_{TAG}_pix2pix' / 'test_best' / 'volumes'
    run_script(EVALUATE, '--pred', str(volumes), '--pred_pattern', '{subject}_fake_B_fused.nii.gz',
               '--gt', str(comparison / 'data'), '--append', TAG, '--label', 'pix2pix outside', cwd=base)
    folder = base / 'results' / f'compare_{TAG}'
    table = read_table(folder / 'table.csv')
    assert [r['model'] for r in table] == MODELS + ['pix2pix outside']
    ours, outside = table[1], table[-1]
    for metric in ('mae', 'psnr', 'ssim'):
        column = f'volume_{metric}_fused_mean'
        assert float(outside[column]) == pytest.approx(float(ours[column]), rel=1e-9)
    assert outside['slice_psnr_mean'] == '' and outside['params_total'] == '' and outside['kind'] == 'outside'
    md = (folder / 'table.md').read_text()
    assert [r[0] for r in markdown_rows(md, 'SynthRAD2023 volume metrics')] == MODELS + ['pix2pix outside']
    refs = html_references(folder / 'index.html')
    assert all(p.is_file() for p in refs)
    assert 'pix2pix outside' in (folder / 'index.html').read_text()


def test_other_shared_options_are_refused(comparison: Path, monkeypatch):
    monkeypatch.chdir(comparison)
    args = ['--dataroot', str(comparison / 'data'), '--name', TAG, '--models', ','.join(MODELS), *SHARED]
    with pytest.raises(ValueError) as err:
        compare.main(args + ['--lr', '0.0002', '--n_epochs', '2'])
    message = str(err.value)
    assert '--lr: earlier 0.0001, now 0.0002' in message and '--n_epochs: earlier 1, now 2' in message
    assert '--ngf' not in message and 'shared_options.json' in message
    # the same options spelt differently, or options that change nothing learnt, are not a difference
    assert comparison_options.plan(compare.build_parser().parse_known_args(args + ['--lr', '1e-4'])[0],
                        SHARED + ['--lr', '1e-4', '--print_freq', '7'])[1]['shared'] == \
        read_json(str(comparison / 'results' / f'compare_{TAG}' / 'shared_options.json'))['shared']


@pytest.mark.parametrize('argv, words', [
    (['--models', 'mrnet,unet3000'], ['unknown model(s) unet3000', 'available:', 'pix2pix']),
    (['--models', 'pix2pix,pix2pix'], ['lists a model twice']),
    (['--models', 'pix2pix', '--no_such_flag', '3'], ['--no_such_flag: not an option']),
    (['--models', 'pix2pix', '--model', 'cycle_gan'], ['--model', 'set by compare.py']),
    (['--models', 'pix2pix,mrnet', '--ablation', 'sam'], ['varies one model']),
    (['--models', 'pix2pix', '--ablation', 'n_masks=1,2'], ['--n_masks is not an option of --model pix2pix']),
    (['--models', 'pix2pix', '--dataset_mode', 'aligned'], ['triplanar_aligned']),
    (['--models', 'pix2pix', '--slices', 'nobody_z003'], ['--slices: "nobody_z003" is not a test slice name']),
    (['--models', 'pix2pix', '--planes', 'z', '--slices', 'demo002_x003'], ['a plane of z']),
])
def test_bad_command_lines_are_clear_errors(base: Path, monkeypatch, argv, words):
    monkeypatch.chdir(base)
    with pytest.raises(ValueError) as err:
        compare.main(['--dataroot', str(base / 'data'), '--name', 'bad', *argv])
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (base / 'results' / 'compare_bad').exists()


def test_ablation_resumes_a_half_finished_run(base: Path, tmp_path: Path, monkeypatch):
    """--ablation n_masks=1,2 with 2 epochs, where n_masks=1 was killed after its first epoch: it resumes from
    its checkpoint, n_masks=2 trains from scratch, and the ablation table has a row per setting."""
    data = base / 'data'
    monkeypatch.chdir(tmp_path)
    tiny = TINY + ['--n_epochs', '2']
    argv = ['--dataroot', str(data), '--name', 'abl', '--ablation', 'n_masks=1,2', '--quiet', '--time_slices', '1',
            *tiny]
    args, shared = compare.build_parser().parse_known_args(argv)
    runs, _ = comparison_options.plan(args, shared)
    assert [(r.label, r.name) for r in runs] == [('n_masks=1', 'compare_abl_n_masks1'),
                                                 ('n_masks=2', 'compare_abl_n_masks2')]
    assert runs[0].train_args[runs[0].train_args.index('--n_masks') + 1] == '1'
    assert '--max_dataset_size' in runs[0].train_args and '--max_dataset_size' not in runs[0].test_args
    run_script(TRAIN, *runs[0].train_args, '--n_epochs', '1', cwd=tmp_path)   # the "killed" run: 1 of 2 epochs

    compare.main(argv)
    folder = tmp_path / 'results' / 'compare_abl'
    log = (folder / 'logs' / 'n_masks1_train.log').read_text()
    assert '--continue_train' in log and 'resuming at epoch 2' in log and 'End of epoch 1 ' not in log
    assert '--continue_train' not in (folder / 'logs' / 'n_masks2_train.log').read_text()
    for key in ('n_masks1', 'n_masks2'):
        assert (tmp_path / 'checkpoints' / f'compare_abl_{key}' / '2_net_G.pth').is_file()
    table = read_table(folder / 'table.csv')
    assert [r['model'] for r in table] == ['n_masks=1', 'n_masks=2']
    assert all(math.isfinite(float(r['volume_psnr_fused_mean'])) for r in table)
    md = (folder / 'table.md').read_text()
    assert md.startswith('# abl') and 'Ablation abl' in md
    assert [r[0] for r in markdown_rows(md, 'Per-slice PSNR and SSIM')] == ['n_masks=1', 'n_masks=2']
    assert all(p.is_file() for p in html_references(folder / 'index.html'))
    with pytest.raises(ValueError, match='it is an ablation'):
        compare.main(['--dataroot', str(data), '--name', 'abl', '--models', 'mrnet', *tiny])


# ----------------------------------------------------------------------------- the helpers, by hand

def test_rank_marks_bold_best_and_underline_second():
    nan = float('nan')
    assert rank_marks([28.2, 30.0, 29.1, nan], True) == ['', 'best', 'second', '']
    assert rank_marks([50.0, 50.0, 70.0, 90.0], False) == ['best', 'best', 'second', '']  # MAE: lower is better
    assert rank_marks([nan, 1.0], True) == ['', 'best']


def _slice(plane: str, index: int, psnr_value: float, ssim_value: float = 0.5) -> dict:
    return {'level': 'slice', 'subject': 's1', 'plane': plane, 'slice': index, 'name': f's1_{plane}{index:03d}',
            'mae': math.nan, 'psnr': psnr_value, 'ssim': ssim_value}


def _volume(plane: str, mae: float, subject: str = 's1') -> dict:
    return {'level': 'volume', 'subject': subject, 'plane': plane, 'slice': -1, 'name': '', 'mae': mae,
            'psnr': 20.0, 'ssim': 0.8}


def test_tables_summarise_per_plane_and_fused():
    ours = Result('ours', 'mrnet', slices=[_slice('x', 0, 20.0), _slice('x', 1, 30.0), _slice('z', 0, 40.0, 0.9)],
                  volumes=[_volume('x', 100.0), _volume('z', 80.0), _volume('fused', 60.0),
                           _volume('fused', 100.0, 's2')],
                  params_total=2.5e6, params_frozen=0.5e6, train_seconds=300.0, inference_ms=3.5,
                  train_flops=1.25e12, volume_seconds=90.0,
                  peaks={'train_peak_rss_mib': 800.0, 'test_peak_rss_mib': 1200.0})
    outside = Result('outside', 'outside', volumes=[_volume('fused', 50.0), _volume('fused', 70.0, 's2')])
    slice_table, volume_table, cost = table_sections([ours, outside], device='cpu')
    assert slice_table.header == ['model', 'PSNR', 'SSIM', 'PSNR x', 'SSIM x', 'PSNR z', 'SSIM z']
    row = slice_table.rows[0]
    assert (row[1].text, row[1].mark) == (f'30.00 ± {np.std([20, 30, 40]):.2f}', 'best')
    assert row[3].text == '25.00 ± 5.00' and row[6].text == '0.9000 ± 0.0000'
    assert [c.text for c in slice_table.rows[1][1:]] == ['-'] * 6
    assert volume_table.header[-3:] == ['MAE (HU) fused', 'PSNR fused', 'SSIM fused']
    mae_fused = volume_table.header.index('MAE (HU) fused')
    assert [(r[mae_fused].text, r[mae_fused].mark) for r in volume_table.rows] == \
        [('80.00 ± 20.00', 'second'), ('60.00 ± 10.00', 'best')]
    assert [c.text for c in cost.rows[0]] == ['ours', '2.50 M (0.50 M frozen)', '5.0 min', '1.25 T', '3.50 ms',
                                              '90.0 s', '800 / 1200 MiB']
    assert [c.text for c in cost.rows[1]] == ['outside'] + ['-'] * 6 and 'cpu' in cost.note
    md = markdown_tables([slice_table, volume_table, cost])
    assert '| ours | **30.00** ± 8.16 |' in md and '| outside | - | - |' in md
    assert '<u>80.00</u> ± 20.00' in md and '**60.00** ± 10.00' in md
    row = csv_row(ours, ['x', 'z'])
    assert (row['slice_psnr_x_mean'], row['slice_psnr_x_std'], row['volume_mae_fused_mean']) == (25.0, 5.0, 80.0)
    assert csv_row(outside, ['x', 'z'])['slice_psnr_mean'] == '' and row['params_frozen'] == 0.5e6
    assert (row['volume_seconds'], row['test_peak_rss_mib'], row['train_peak_gpu_mib']) == (90.0, 1200.0, '')


def test_region_of_interest_is_the_largest_error():
    error = np.zeros((16, 20))
    error[9:13, 12:17] = 1.0
    error[0, 0] = 3.0                                        # a single bright pixel is not a region
    assert roi_box(error) == (9, 12, 4, 5)


def test_slice_choice():
    slices = [_slice('z', i, p) for i, p in enumerate([5.0, 22.0, 18.0, 30.0, 25.0])]
    ref = Result('ours', 'mrnet', slices=slices, volume_files={('s1', 'z'): 'v.nii.gz'})
    picks = choose_slices(ref, ['s1_z002'], body=lambda s: {'z': np.array([0.0, 0.5, 0.5, 0.5, 0.5])})
    # slice 0 (no body) is left out of worst/median/best; slice 2 is both the worst and asked for
    assert [(p.name, p.reason) for p in picks] == [
        ('s1_z002', 'worst PSNR of ours, asked for'), ('s1_z004', 'median PSNR of ours'),
        ('s1_z003', 'best PSNR of ours')]
    with pytest.raises(ValueError, match='"s1_y007" is not a test slice of ours'):
        choose_slices(ref, ['s1_y007'])


def test_option_differences_name_each_flag():
    assert option_differences({'lr': 1e-4, 'ngf': 8}, {'lr': 2e-4, 'ngf': 8, 'seed': 1}) == \
        ['--lr: earlier 0.0001, now 0.0002', "--seed: earlier 'unset', now 1"]


def test_synthrad2025_metrics_reach_test_and_the_tables(base: Path):
    """--metrics synthrad2025 is passed to test.py, and volume rows with ms_ssim make the MS-SSIM table."""
    argv = ['--dataroot', str(base / 'data'), '--name', 'm25', '--models', 'pix2pix', '--metrics', 'synthrad2025']
    args, shared = compare.build_parser().parse_known_args(argv)
    runs, _ = comparison_options.plan(args, shared)
    assert runs[0].test_args[runs[0].test_args.index('--metrics') + 1] == 'synthrad2025'
    rows = [{**_volume('fused', mae), 'ssim': math.nan, 'ms_ssim': score}
            for mae, score in ((60.0, 0.9), (80.0, 0.8))]
    _, volume_table, _ = table_sections([Result('ours', 'mrnet', volumes=rows)])
    assert volume_table.title == 'SynthRAD2025 volume metrics' and '[-1024, 3000] HU' in volume_table.note
    assert volume_table.header[-3:] == ['MAE (HU) fused', 'PSNR fused', 'MS-SSIM fused']
    assert volume_table.rows[0][-1].text == '0.8500 ± 0.0500'
    with pytest.raises(ValueError, match='--split'):
        comparison_options.plan(*compare.build_parser().parse_known_args(argv + ['--split', 'all']))
