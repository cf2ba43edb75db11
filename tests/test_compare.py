"""scripts/compare.py end to end at CI size (tiny networks, tiny demo volumes, one or two iterations): a comparison
of MRNet, pix2pix and CycleGAN, an ablation with a run resumed from a half-finished training, reuse of finished
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

import scripts.make_demo_data as demo
from conftest import ROOT, run_script
from scripts import compare
from util.comparison import read_json, read_metrics_csv
from util.metrics import psnr

COMPARE = str(ROOT / 'scripts' / 'compare.py')
EVALUATE = str(ROOT / 'scripts' / 'evaluate.py')
TRAIN = str(ROOT / 'train.py')
TAG = 'ci'
MODELS = ['mrnet', 'pix2pix', 'cycle_gan']
# shared by every run: tiny networks, one or two iterations, CPU; the --sam_* flags reach MRNet only
TINY = ['--ngf', '4', '--ndf', '4', '--n_epochs', '1', '--max_dataset_size', '2', '--batch_size', '2',
        '--gpu_ids', '-1', '--num_threads', '0', '--print_freq', '1', '--sam_input_size', '64',
        '--sam_embed_dim', '32', '--sam_depth', '2', '--sam_num_heads', '2', '--sam_global_attn_indexes', '1']


def make_data(root: Path) -> Path:
    """Three demo subjects of 12 x 14 x 10 voxels (36 slices each, 16 mm voxels): one per split."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, 'SHAPE', (12, 14, 10))
        mp.setattr(demo, 'SPACING_ISO', (16.0, 16.0, 16.0))
        mp.setattr(demo, 'SPACING_ANISO', (16.0, 16.0, 20.0))
        demo.make_synthrad(str(root), 3, 2024)
    return root


@pytest.fixture(scope='module')
def comparison(tmp_path_factory) -> Path:
    """A finished comparison of MRNet, pix2pix and CycleGAN in <base>/results/compare_ci; returns <base>."""
    base = tmp_path_factory.mktemp('compare')
    data = make_data(base / 'data')
    run_script(COMPARE, '--dataroot', str(data), '--name', TAG, '--models', ','.join(MODELS), '--quiet',
               '--time_slices', '1', *TINY, cwd=base)
    return base


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
        metrics = read_metrics_csv(str(comparison / 'results' / f'compare_{TAG}_{model}' / 'test_latest' / 'metrics.csv'))
        slices = [r for r in metrics if r['level'] == 'slice']
        assert int(row['n_slices']) == len(slices) == 36 and int(row['n_subjects']) == 1
        psnrs = np.array([r['psnr'] for r in slices])
        assert float(row['slice_psnr_mean']) == pytest.approx(psnrs.mean())
        assert float(row['slice_psnr_std']) == pytest.approx(psnrs.std())
        assert float(row['slice_ssim_z_mean']) == pytest.approx(np.mean([r['ssim'] for r in slices if r['plane'] == 'z']))
        fused = next(r for r in metrics if r['level'] == 'volume' and r['plane'] == 'fused')
        assert float(row['volume_mae_fused_mean']) == pytest.approx(fused['mae'])
        assert float(row['volume_ssim_x_std']) == 0.0  # one test subject
        assert float(row['train_seconds']) > 0 and float(row['inference_ms_per_slice']) > 0
    params = {r['model']: (float(r['params_total']), float(r['params_frozen'])) for r in table}
    assert 0 < params['mrnet'][1] < params['mrnet'][0]            # the frozen SAM counts, and is named
    assert params['pix2pix'][1] == params['cycle_gan'][1] == 0

    md = (folder / 'table.md').read_text()
    for title in ('Per-slice PSNR and SSIM', 'SynthRAD2023 volume metrics', 'Cost'):
        assert [r[0] for r in markdown_rows(md, title)] == MODELS
    order = sorted(table, key=lambda r: -float(r['slice_psnr_mean']))
    rows = {r[0]: r for r in markdown_rows(md, 'Per-slice PSNR and SSIM')}
    assert rows[order[0]['model']][1].startswith(f'**{float(order[0]["slice_psnr_mean"]):.2f}** ±')
    assert rows[order[1]['model']][1].startswith(f'<u>{float(order[1]["slice_psnr_mean"]):.2f}</u> ±')
    assert '**' not in rows[order[2]['model']][1] and '<u>' not in rows[order[2]['model']][1]

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


def test_strip_captions_are_the_psnr_of_the_shown_slices(comparison: Path):
    """The strip of the worst slice names each model's PSNR; recompute one from the written volumes."""
    import nibabel as nib
    from util.volume import Geometry, take_slice
    html = (comparison / 'results' / f'compare_{TAG}' / 'index.html').read_text()
    m = re.search(r'(demo002_([xyz])(\d{3})) \(worst PSNR of mrnet[^;]*\); PSNR of this slice: mrnet ([\d.]+) dB', html)
    assert m, 'no caption for the worst slice'
    plane, index = m.group(2), int(m.group(3))

    def cut(path: Path) -> np.ndarray:
        img = nib.load(str(path))
        return take_slice(Geometry.of(img).to_canonical(img.get_fdata(dtype=np.float32)), 'xyz'.index(plane), index)
    pred = cut(comparison / 'results' / f'compare_{TAG}_mrnet' / 'test_latest' / 'volumes' / f'demo002_fake_B_{plane}.nii.gz')
    truth = cut(comparison / 'data' / 'demo002' / 'ct.nii.gz')
    expected = psnr(np.clip(pred, -1024, 3000), np.clip(truth, -1024, 3000), 4024.0)
    assert float(m.group(4)) == pytest.approx(expected, abs=0.006)


def test_second_call_reuses_finished_runs(comparison: Path):
    folder = comparison / 'results' / f'compare_{TAG}'
    logs = {p.name: p.stat().st_size for p in (folder / 'logs').iterdir()}
    proc = run_script(COMPARE, '--dataroot', str(comparison / 'data'), '--name', TAG, '--models', ','.join(MODELS),
                      '--quiet', *TINY, cwd=comparison)
    assert proc.stdout.count('reusing the trained') == 3 and proc.stdout.count('reusing the test results') == 3
    assert 'training compare_' not in proc.stdout and 'testing compare_' not in proc.stdout
    assert {p.name: p.stat().st_size for p in (folder / 'logs').iterdir()} == logs
    assert all(read_json(str(folder / 'runs' / f'{m}.json'))['train_sessions'] == 1 for m in MODELS)


def test_outside_volumes_join_the_table(comparison: Path, tmp_path: Path):
    """pix2pix's own fused volumes scored by evaluate.py give exactly pix2pix's fused volume metrics."""
    base = tmp_path / 'copy'
    shutil.copytree(comparison, base)
    volumes = base / 'results' / f'compare_{TAG}_pix2pix' / 'test_latest' / 'volumes'
    run_script(EVALUATE, '--pred', str(volumes), '--pred_pattern', '{subject}_fake_B_fused.nii.gz',
               '--gt', str(comparison / 'data'), '--append', TAG, '--label', 'pix2pix outside', cwd=base)
    folder = base / 'results' / f'compare_{TAG}'
    table = read_table(folder / 'table.csv')
    assert [r['model'] for r in table] == MODELS + ['pix2pix outside']
    ours, outside = table[1], table[3]
    for metric in ('mae', 'psnr', 'ssim'):
        assert float(outside[f'volume_{metric}_fused_mean']) == pytest.approx(float(ours[f'volume_{metric}_fused_mean']),
                                                                              rel=1e-9)
    assert outside['slice_psnr_mean'] == '' and outside['params_total'] == '' and outside['kind'] == 'outside'
    md = (folder / 'table.md').read_text()
    assert [r[0] for r in markdown_rows(md, 'SynthRAD2023 volume metrics')] == MODELS + ['pix2pix outside']
    refs = html_references(folder / 'index.html')
    assert all(p.is_file() for p in refs)
    assert 'pix2pix outside' in (folder / 'index.html').read_text()


def test_other_shared_options_are_refused(comparison: Path, monkeypatch):
    monkeypatch.chdir(comparison)
    args = ['--dataroot', str(comparison / 'data'), '--name', TAG, '--models', ','.join(MODELS), *TINY]
    with pytest.raises(ValueError) as err:
        compare.main(args + ['--lr', '0.0002', '--n_epochs', '2'])
    message = str(err.value)
    assert '--lr: earlier 0.0001, now 0.0002' in message and '--n_epochs: earlier 1, now 2' in message
    assert '--ngf' not in message and 'shared_options.json' in message
    # the same options spelt differently, or options that change nothing learnt, are not a difference
    assert compare.plan(compare.build_parser().parse_known_args(args + ['--lr', '1e-4'])[0],
                        TINY + ['--lr', '1e-4', '--print_freq', '7'])[1]['shared'] == \
        read_json(str(comparison / 'results' / f'compare_{TAG}' / 'shared_options.json'))['shared']


@pytest.mark.parametrize('argv, words', [
    (['--models', 'mrnet,unet3000'], ['unknown model(s) unet3000', 'available:', 'pix2pix']),
    (['--models', 'pix2pix,pix2pix'], ['lists a model twice']),
    (['--models', 'pix2pix', '--no_such_flag', '3'], ['--no_such_flag: not an option']),
    (['--models', 'pix2pix', '--model', 'cycle_gan'], ['--model', 'set by compare.py']),
    (['--models', 'pix2pix,mrnet', '--ablation', 'sam'], ['varies one model']),
    (['--models', 'pix2pix', '--ablation', 'n_masks=1,2'], ['--n_masks is not an option of --model pix2pix']),
    (['--models', 'pix2pix', '--dataset_mode', 'aligned'], ['triplanar_aligned']),
])
def test_bad_command_lines_are_clear_errors(comparison: Path, monkeypatch, argv, words):
    monkeypatch.chdir(comparison)
    with pytest.raises(ValueError) as err:
        compare.main(['--dataroot', str(comparison / 'data'), '--name', 'bad', *argv])
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (comparison / 'results' / 'compare_bad').exists()


def test_ablation_resumes_a_half_finished_run(tmp_path: Path, monkeypatch):
    """--ablation n_masks=1,2 with 2 epochs, where n_masks=1 was killed after its first epoch: it resumes from
    its checkpoint, n_masks=2 trains from scratch, and the ablation table has a row per setting."""
    data = make_data(tmp_path / 'data')
    monkeypatch.chdir(tmp_path)
    tiny = TINY + ['--n_epochs', '2']
    argv = ['--dataroot', str(data), '--name', 'abl', '--ablation', 'n_masks=1,2', '--quiet', '--time_slices', '1',
            *tiny]
    args, shared = compare.build_parser().parse_known_args(argv)
    runs, _ = compare.plan(args, shared)
    assert [(r.label, r.name) for r in runs] == [('n_masks=1', 'compare_abl_n_masks1'), ('n_masks=2', 'compare_abl_n_masks2')]
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
