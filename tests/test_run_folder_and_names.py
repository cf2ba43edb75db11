"""One writer per run folder (util/run_lock.py), names kept whole through files, pages and metrics, clashing names
refused, per-subject failures that cost nobody else, and exit status 2 for user errors."""
from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import test as test_script
from conftest import ROOT, _pattern, run_script
from data.splits import write_splits
from models import create_model
from options.train_options import TrainOptions
from util.run_lock import LOCK_FILE, RunLock
from volume_fixtures import phantom, write_subject

TRAIN = str(ROOT / 'train.py')
TINY = ['--model', 'pix2pix', '--netG', 'resnet_6blocks', '--ngf', '4', '--ndf', '4', '--n_layers_D', '1',
        '--load_size', '32', '--crop_size', '32', '--gpu_ids', '-1', '--num_threads', '0']


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that takes the lock of ``folder`` and keeps it until killed."""
    code = (f'import sys, time; sys.path.insert(0, {str(ROOT)!r}); from util.run_lock import RunLock; '
            f'RunLock({str(folder)!r}).acquire(); print("locked", flush=True); time.sleep(120)')
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'locked'
    return proc


def test_second_writer_stops_at_once_and_a_dead_one_is_taken_over(aligned_root: Path, tmp_path: Path):
    run = tmp_path / 'checkpoints' / 'shared'
    holder = _holder(run)
    args = [*TINY, '--dataroot', str(aligned_root), '--name', 'shared', '--n_epochs', '1', '--n_epochs_decay', '0',
            '--display_id', '0']
    try:
        proc = run_script(TRAIN, *args, cwd=tmp_path, check=False)
        assert proc.returncode == 2
        assert f'is in use by another training run (PID {holder.pid} on {socket.gethostname()}' in proc.stderr
        assert proc.stderr.count('error:') == 1 and 'Traceback' not in proc.stderr
        # stopped before writing anything into the folder: no options dump, no log, no checkpoint
        assert sorted(p.name for p in run.iterdir() if not p.name.startswith('.')) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    proc = run_script(TRAIN, *args, cwd=tmp_path)
    assert f'taking over a stale lock of PID {holder.pid}' in proc.stdout
    assert (run / 'latest_net_G.pth').exists() and not (run / LOCK_FILE).exists()   # released at the end


def test_test_py_reads_while_training_holds_the_folder(aligned_root: Path, tmp_path: Path):
    ckpt = tmp_path / 'checkpoints'
    _checkpoint(ckpt, 'busy')
    holder = _holder(ckpt / 'busy')
    try:
        page = test_script.main([*TINY, '--dataroot', str(aligned_root), '--name', 'busy', '--checkpoints_dir',
                                 str(ckpt), '--results_dir', str(tmp_path / 'results')])
        assert os.path.isfile(page)
        assert (ckpt / 'busy' / LOCK_FILE).exists()        # the reader left the writer's lock alone
    finally:
        holder.kill()
        holder.wait()


def test_same_process_may_take_its_own_lock_again(tmp_path: Path):
    first = RunLock(str(tmp_path)).acquire()
    second = RunLock(str(tmp_path)).acquire()
    assert first.owner() == second.owner() and second.owner()['pid'] == os.getpid()
    second.release()
    assert not (tmp_path / LOCK_FILE).exists()


def _checkpoint(ckpt: Path, name: str) -> None:
    """latest_net_G/D.pth of a freshly initialised TINY pix2pix."""
    opt = TrainOptions().parse([*TINY, '--checkpoints_dir', str(ckpt), '--name', name, '--display_id', '0'])
    model = create_model(opt)
    model.setup(opt)
    model.save_networks('latest')


def _rgb(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = _pattern(np.random.default_rng(seed), 32)
    Image.fromarray(np.stack([np.concatenate([a, 255 - a], 1).astype(np.uint8)] * 3, -1)).save(path)


def test_dotted_names_stay_whole_and_clashes_are_refused(tmp_path: Path):
    data, ckpt, results = tmp_path / 'data', tmp_path / 'checkpoints', tmp_path / 'results'
    names = ['pat.1', 'pat.2', '1.2.840.10008.5.1']
    for i, name in enumerate(names):
        _rgb(data / 'test' / f'{name}.png', i)
    _checkpoint(ckpt, 'dots')
    common = [*TINY, '--dataroot', str(data), '--name', 'dots', '--checkpoints_dir', str(ckpt), '--results_dir',
              str(results)]
    page = test_script.main(common)
    images = Path(page).parent / 'images'
    assert sorted(p.name for p in images.glob('*_fake_B.png')) == sorted(f'{n}_fake_B.png' for n in names)
    html = Path(page).read_text()
    for n in names:
        assert html.count(f'<h3>{n}</h3>') == 1
    with open(Path(page).parent / 'metrics.csv') as f:
        assert sorted(r['name'] for r in csv.DictReader(f)) == sorted(names)
    # two inputs that would be saved under one name: refused before any work, naming both
    _rgb(data / 'test' / 'more' / 'pat.1.png', 9)
    for f in images.iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r'more/pat\.1\.png and .*test/pat\.1\.png would both be saved as "pat\.1"'):
        test_script.main(common)
    assert list(images.iterdir()) == []
    proc = run_script(str(ROOT / 'test.py'), *common, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'test.py: error:' in proc.stderr and 'Traceback' not in proc.stderr


def test_a_thin_subject_costs_nobody_else_and_keeps_its_dotted_name(tmp_path: Path, capsys):
    """Subject 'pat.1' is 3 voxels thick (no 7-voxel SSIM): announced before work, its SSIM left empty; the UID-named
    subject is scored fully; page, volumes and metrics.csv cover both."""
    data, ckpt = tmp_path / 'data', tmp_path / 'checkpoints'
    uid = '1.2.840.113619.2'
    write_subject(data, 'pat.1', volumes=phantom((12, 14, 3)))
    write_subject(data, uid)
    write_splits(str(data), {'test': ['pat.1', uid]})
    common = ['--dataset_mode', 'triplanar_aligned', '--input_nc', '1', '--output_nc', '1', '--checkpoints_dir',
              str(ckpt), '--name', 'thin', *TINY]
    _checkpoint_args = [*common, '--dataroot', str(data), '--display_id', '0']
    opt = TrainOptions().parse(_checkpoint_args)
    model = create_model(opt)
    model.setup(opt)
    model.save_networks('latest')
    capsys.readouterr()
    page = Path(test_script.main([*common, '--dataroot', str(data), '--results_dir', str(tmp_path / 'results')]))
    out = capsys.readouterr()
    warning = 'WARNING: subject pat.1: no volume SSIM: the volume (12, 14, 3) is thinner than the 7-voxel SSIM window'
    assert warning in out.err
    with open(page.parent / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    volume = {(r['subject'], r['plane']): r for r in rows if r['level'] == 'volume'}
    assert sorted(volume) == sorted((s, p) for s in ('pat.1', uid) for p in ('x', 'y', 'z', 'fused'))
    assert math.isnan(float(volume['pat.1', 'fused']['ssim']))
    assert math.isfinite(float(volume['pat.1', 'fused']['mae'])) and math.isfinite(float(volume[uid, 'fused']['ssim']))
    slices = [r for r in rows if r['level'] == 'slice']
    assert {r['subject'] for r in slices} == {'pat.1', uid}
    assert all(r['name'].startswith(r['subject'] + '_') for r in slices)
    assert (page.parent / 'volumes' / 'pat.1_fake_B_fused.nii.gz').exists()
    assert (page.parent / 'volumes' / f'{uid}_fake_B_fused.nii.gz').exists()
    assert (page.parent / 'images' / 'pat.1_z001_fake_B.png').exists()
    html = page.read_text()
    assert 'pat.1: SSIM not computed (the volume (12, 14, 3) is thinner' in html
    assert f'{uid}: input' in html and 'pat.1: input' in html   # both subjects' figures


def test_evaluate_scores_every_subject_it_can(tmp_path: Path):
    """scripts/evaluate.py: an empty mask or a thin volume leaves that metric empty; a prediction off the ground
    truth's grid fails that subject alone, named, after the others are written; exit status 2."""
    from volume_fixtures import write_nifti
    gt, pred, masks = tmp_path / 'gt', tmp_path / 'pred', tmp_path / 'masks'
    for folder in (gt, pred, masks):
        folder.mkdir()
    good, thin = phantom(), phantom((12, 14, 3))
    for name, vols in (('ok.1', good), ('thin.2', thin), ('empty.3', good), ('off.4', good)):
        write_nifti(gt / f'{name}.nii.gz', vols['ct'])
        write_nifti(masks / f'{name}.nii.gz', vols['mask'] * (name != 'empty.3'), dtype=np.uint8)
        p = vols['ct'] + 10
        write_nifti(pred / f'{name}.nii.gz', p, np.diag([2.0, 1, 1, 1]) if name == 'off.4' else None)
    out = tmp_path / 'scores.csv'
    proc = run_script(str(ROOT / 'scripts' / 'evaluate.py'), '--pred', str(pred), '--gt', str(gt), '--mask',
                      str(masks), '--out', str(out), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert 'could not be scored: off.4: ' in proc.stderr and 'does not match the ground truth' in proc.stderr
    assert 'WARNING: subject thin.2: SSIM not computed' in proc.stderr
    assert 'WARNING: subject empty.3: MAE not computed: the mask is empty' in proc.stderr
    with open(out) as f:
        rows = {r['subject']: r for r in csv.DictReader(f)}
    assert sorted(rows) == ['empty.3', 'ok.1', 'thin.2']
    assert float(rows['ok.1']['mae']) == pytest.approx(10, abs=1e-4) and float(rows['thin.2']['mae']) == \
        pytest.approx(10, abs=1e-4)
    assert math.isnan(float(rows['thin.2']['ssim'])) and math.isfinite(float(rows['ok.1']['ssim']))
    assert all(math.isnan(float(rows['empty.3'][m])) for m in ('mae', 'psnr', 'ssim'))


def test_user_errors_exit_with_status_2(tmp_path: Path):
    start = time.time()
    proc = run_script(TRAIN, *TINY, '--dataroot', str(tmp_path / 'missing'), '--display_id', '0', cwd=tmp_path,
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[0].startswith('train.py: error: ')
    assert 'missing' in proc.stderr and time.time() - start < 120
    bad_flag = run_script(TRAIN, '--no_such_flag', cwd=tmp_path, check=False)
    assert bad_flag.returncode == 2     # argparse's status for a bad command line: the same convention
