"""Failures at the edges (issue 17): full disks, read-only media, missing state, damaged files and odd volumes each
end in one line naming the file and the problem (exit 2), with nothing lost and nothing half-written.

Full disks and read-only mounts are injected (OSError ENOSPC / EROFS raised where the system would raise it, as a
full tmpfs makes torch.save report it), so the tests need neither root nor mount; the SIGBUS of a chunk truncated
while mapped is reproduced for real in a child process."""
from __future__ import annotations

import errno
import importlib
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from util import checkpoint, disk
from util.checkpoint import atomic_save, journal_path, safe_load, save_together
from util.cli import run_cli
from util.disk import WriteError
from util.run_lock import RunLock


def raise_os(code: int, path: str):
    raise OSError(code, os.strerror(code), path)


class FullDisk:
    """A file that takes ``room`` bytes and then fails as a full disk does (OSError ENOSPC)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def only_ours(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def cli_error(capsys, main) -> str:
    """Run ``main`` through run_cli; it must exit 2 with one ``<program>: error:`` line (and the --verbose hint)."""
    with pytest.raises(SystemExit) as info:
        run_cli(main)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and ': error: ' in err[0] and 'Traceback' not in ''.join(err), err
    return err[0]


# ----------------------------------------------------------------------------- 1. resume without its state

def tiny_pix2pix(tmp_path: Path, *args: str):
    from models import create_model
    from options.train_options import TrainOptions
    opt = TrainOptions().parse(['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '2', '--ndf', '2', '--gpu_ids',
                                '-1', '--checkpoints_dir', str(tmp_path), '--name', 'c', '--display_id', '0', *args],
                               setup_device=False)
    model = create_model(opt)
    model.setup(opt)
    return model


def test_resume_without_latest_state_is_refused_naming_the_file(tmp_path):
    model = tiny_pix2pix(tmp_path)
    model.save_training_state('latest', {'epoch': 3, 'epoch_iter': 0, 'total_iters': 8})
    state = tmp_path / 'c' / 'latest_state.pth'
    state.unlink()
    with pytest.raises(FileNotFoundError) as info:
        tiny_pix2pix(tmp_path).load_training_state('latest')
    message = str(info.value)
    assert f'cannot resume: {state} is missing' in message and 'latest_net_G.pth, latest_net_D.pth' in message
    assert 'epoch 3, 8 images seen' in message


def test_classic_checkpoint_resumes_at_epoch_count(tmp_path):
    """Networks of the classic toolkit (plain state dicts, no state file): weights only, training starts at
    --epoch_count (it started one epoch early, at 0, and the linear schedule went below zero)."""
    model = tiny_pix2pix(tmp_path)
    for name in ('G', 'D'):
        torch.save(model.unwrap(name).state_dict(), tmp_path / 'c' / f'latest_net_{name}.pth')
    assert tiny_pix2pix(tmp_path).load_training_state('latest')['epoch'] == 1
    assert tiny_pix2pix(tmp_path, '--epoch_count', '4').load_training_state('latest')['epoch'] == 4


# ----------------------------------------------------------------------------- 2. full disk

def test_full_disk_during_a_save_keeps_the_last_checkpoint_and_leaves_nothing(tmp_path, monkeypatch):
    a, b = str(tmp_path / 'latest_net_G.pth'), str(tmp_path / 'latest_state.pth')
    save_together({a: {'v': torch.zeros(4)}, b: {'v': torch.zeros(4)}}, journal_path(str(tmp_path), 'latest'))
    real_save = torch.save
    calls = []

    def save_on_full_disk(obj, f):
        calls.append(1)
        real_save(obj, f if len(calls) == 1 else FullDisk(f, 100))   # the second file meets a full disk
    monkeypatch.setattr(torch, 'save', save_on_full_disk)
    with pytest.raises(WriteError) as info:
        save_together({a: {'v': torch.ones(4)}, b: {'v': torch.ones(4)}}, journal_path(str(tmp_path), 'latest'))
    assert str(info.value).startswith(f'no space left on {disk.mount_point(str(tmp_path))} while writing {b} (')
    assert only_ours(tmp_path) == ['latest_net_G.pth', 'latest_state.pth']     # no temporary file, no journal
    assert float(safe_load(a)['v'][0]) == float(safe_load(b)['v'][0]) == 0     # the last whole checkpoint


def test_a_save_the_disk_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    path = str(tmp_path / 'latest_net_G.pth')
    atomic_save({'v': torch.zeros(1)}, path)
    free = 3 << 20
    monkeypatch.setattr(disk.shutil, 'disk_usage', lambda p: type('u', (), {'free': free})())
    monkeypatch.setattr(checkpoint, '_write_temp', lambda *a, **k: pytest.fail('wrote on a disk too small'))
    weights = {'v': torch.zeros(1 << 20)}                                       # 4 MiB of float32
    with pytest.raises(WriteError, match=r'not enough space on .* for the checkpoint latest_net_G.pth in '
                                         rf'{tmp_path} \(the last whole checkpoint is kept\): it needs 5.0 MiB, '
                                         r'3.0 MiB are free'):
        save_together({path: weights}, journal_path(str(tmp_path), 'latest'))
    assert checkpoint.tensor_bytes({'a': weights['v'], 'b': [weights['v'][:10]]}) == 4 << 20   # shared storage once
    assert only_ours(tmp_path) == ['latest_net_G.pth'] and float(safe_load(path)['v'][0]) == 0


def test_full_disk_when_taking_the_run_lock_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import util.run_lock as run_lock
    monkeypatch.setattr(run_lock.json, 'dump', lambda obj, f: raise_os(errno.ENOSPC, None))
    message = cli_error(capsys, lambda: RunLock(str(tmp_path / 'run')).acquire())
    assert f'no space left on {disk.mount_point(str(tmp_path))} while writing {tmp_path / "run" / "train.lock"}' \
        in message
    assert [p for p in os.listdir(tmp_path / 'run') if 'lock' in p and 'guard' not in p] == []


def test_volumes_and_sam_chunks_on_a_full_disk_name_the_file_and_leave_nothing(tmp_path, monkeypatch):
    from data import sam_cache
    from data.sam_cache import ChunkPlan
    from inference.export import volume_file
    from inference.export.volume_file import write_image
    from util.image_io import reference_image
    data = np.zeros((4, 5, 6), np.float32)
    out = tmp_path / 'out'
    out.mkdir()
    monkeypatch.setattr(volume_file, 'save_nifti', lambda d, r, path: raise_os(errno.ENOSPC, None))
    with pytest.raises(WriteError, match=rf'^no space left on .* while writing {out / "sct.nii.gz"} \('):
        write_image(data, reference_image(data, np.eye(4)), str(out / 'sct.nii.gz'))
    assert os.listdir(out) == []
    cache, stem, features, reader = small_cache(tmp_path / 'cache')
    real_save = np.save
    monkeypatch.setattr(sam_cache.np, 'save', lambda f, a: (real_save(f, a[:1]), raise_os(errno.ENOSPC, None)))
    with pytest.raises(WriteError, match=r'^no space left on .* while writing .*/s/z0003-0005\.[0-9a-f]{8}\.npy \('):
        cache.write_chunk(ChunkPlan('s', 'z', (3, 4, 5), (3, 4, 5)), 'f', features)
    assert sorted(os.listdir(os.path.dirname(stem))) == sorted(os.path.basename(stem) + e for e in ('.json', '.npy'))


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 256 KiB tmpfs under tmp_path, filled up (needs the right to mount: skipped without it)."""
    mnt = tmp_path / 'full'
    mnt.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mnt)], capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here (needs root); the injected full disks above cover the same paths')
    try:
        with open(mnt / 'filler', 'wb') as f:
            try:
                f.write(b'\0' * (1 << 20))
                f.flush()
            except OSError:
                pass
        yield mnt
    finally:
        subprocess.run(['umount', '-l', str(mnt)], capture_output=True)


def test_train_on_a_full_disk_is_one_line_and_leaves_no_lock(full_tmpfs, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--model', 'pix2pix', '--gpu_ids', '-1',
                           '--checkpoints_dir', str(full_tmpfs / 'ck'), '--name', 'run', '--display_id', '0'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert f'train.py: error: no space left on {full_tmpfs} while writing {full_tmpfs / "ck" / "run"}' in proc.stderr
    assert [p for p in os.listdir(full_tmpfs / 'ck' / 'run') if 'lock' in p and 'guard' not in p] == []


def test_any_unhandled_full_or_read_only_write_is_one_line(capsys, tmp_path):
    """The net under every writer: an OSError of a full disk or read-only mount reaching run_cli."""
    target = str(tmp_path / 'loss_log.txt')
    assert cli_error(capsys, lambda: raise_os(errno.ENOSPC, target)).endswith(
        f'error: no space left on {disk.mount_point(target)} while writing {target} '
        f'({disk.human_bytes(disk.free_bytes(target))} free); free some space or write elsewhere')
    assert cli_error(capsys, lambda: raise_os(errno.EROFS, target)).endswith(
        f'error: cannot write {target}: {disk.mount_point(target)} is mounted read-only')
    with pytest.raises(OSError):            # anything else is a bug and keeps its traceback
        run_cli(lambda: raise_os(errno.EIO, target))


# ----------------------------------------------------------------------------- 3. read-only media

def test_read_only_dataroot_keeps_the_split_aside_and_names_the_slice_store(tmp_path, monkeypatch):
    from data import triplanar_aligned_dataset as tad
    from volume_fixtures import make_opt, write_subject
    data = tmp_path / 'data'
    for name in ('s0', 's1', 's2'):
        write_subject(data, name)
    real_makedirs = os.makedirs

    def read_only(path, *args, **kwargs):               # everything under the dataroot is on a read-only mount
        if str(path).startswith(str(data)):
            raise_os(errno.EROFS, str(path))
        return real_makedirs(path, *args, **kwargs)
    monkeypatch.setattr(os, 'makedirs', read_only)
    opt = make_opt(data, '--phase', 'train', checkpoints=tmp_path / 'ck')
    with pytest.raises(RuntimeError) as info:
        tad.TriplanarAlignedDataset(opt)
    assert str(info.value).startswith(f'cannot write the slice store under {data / ".cache"}')
    assert 'is mounted read-only' in str(info.value) and str(info.value).endswith('pass --cache_dir with a '
                                                                                 'writable folder')
    assert (tmp_path / 'ck' / opt.name / 'splits' / 'train.txt').is_file()      # the documented split fallback
    assert sorted(os.listdir(data)) == ['s0', 's1', 's2']
    monkeypatch.setattr(os, 'makedirs', real_makedirs)
    opt = make_opt(data, '--phase', 'train', '--cache_dir', str(tmp_path / 'store'), checkpoints=tmp_path / 'ck')
    assert len(tad.TriplanarAlignedDataset(opt).subjects) == 1                   # with --cache_dir it works


def small_cache(root: Path, shape: tuple[int, int, int] = (2, 2, 2)):
    """A SAM feature cache with one 3-row chunk of ``shape`` float16 features for subject 's', plane z."""
    from data.sam_cache import CachedFeatures, ChunkPlan, SamFeatureCache
    cache = SamFeatureCache(str(root), {'test': 1}, shape)
    cache.open()
    features = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float16)
    stem = cache.write_chunk(ChunkPlan('s', 'z', (0, 1, 2), (0, 1, 2)), 'f', features)
    return cache, stem, features, lambda: CachedFeatures(cache.scan({'s': 'f'}), cache.shape, cache.dtype)


def test_damaged_chunk_of_a_read_only_cache_is_computed_without_rewriting(tmp_path, monkeypatch, capsys):
    from data import sam_cache
    cache, stem, features, reader = small_cache(tmp_path)
    raw = bytearray(Path(stem + '.npy').read_bytes())
    raw[-1] ^= 0x7f                                                         # last row damaged
    Path(stem + '.npy').write_bytes(bytes(raw))
    real_remove = os.remove
    monkeypatch.setattr(sam_cache.os, 'remove', lambda p: raise_os(errno.EROFS, p) if str(p).startswith(
        str(tmp_path)) else real_remove(p))
    monkeypatch.setattr(tempfile, 'mkstemp', lambda *a, dir=None, **k: raise_os(errno.EROFS, dir))
    features_read = reader()
    feature, cached = features_read.read(('s', 'z', 2))
    assert not cached and torch.equal(feature, torch.zeros(2, 2, 2, dtype=torch.float16))
    err = capsys.readouterr().err
    assert f'chunk {stem}.npy is damaged (checksum mismatch): not removed ({os.path.dirname(stem)} cannot be ' \
           f'written): its slices are computed by SAM at every step instead' in err
    assert os.path.exists(stem + '.npy') and os.path.exists(stem + '.json')
    assert not features_read.read(('s', 'z', 0))[1]                           # the chunk is not read again
    assert not cache.writable()


# ----------------------------------------------------------------------------- 4. predict into a folder it cannot write

@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """checkpoints/tiny/latest_net_G.pth: an untrained 1 -> 1 resnet_6blocks (ngf 2) for MR -> CT on 32x32."""
    from models.networks import define_G
    options = {'netG': 'resnet_6blocks', 'ngf': 2, 'norm': 'instance', 'input_nc': 1, 'output_nc': 1,
               'modality_A': 'mr', 'modality_B': 'ct', 'crop_size': 32, 'no_dropout': True, 'planes': 'z'}
    net = define_G(1, 1, 2, 'resnet_6blocks', 'instance', False, 'normal', 0.02)
    atomic_save(checkpoint.network_file(net.state_dict(), {}, options), str(tmp_path / 'ck' / 'tiny' /
                                                                             'latest_net_G.pth'))
    return tmp_path / 'ck'


def test_predict_checks_its_output_folder_before_the_first_slice(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from inference import predictor as prediction
    from scripts import predict
    from util.image_io import reference_image
    from inference.export.volume_file import write_image
    from volume_fixtures import phantom
    mr = phantom()['mr']
    write_image(mr, reference_image(mr, np.eye(4)), str(tmp_path / 'mr.nii.gz'))
    out = tmp_path / 'readonly' / 'sct.nii.gz'
    (tmp_path / 'readonly').mkdir()
    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def refuse(real):
        def make(*args, dir=None, **kwargs):
            if str(dir).startswith(str(tmp_path / 'readonly')):
                raise_os(errno.EROFS, os.path.join(dir, 'tmp'))
            return real(*args, dir=dir, **kwargs)
        return make
    monkeypatch.setattr(tempfile, 'mkstemp', refuse(real_mkstemp))
    monkeypatch.setattr(tempfile, 'mkdtemp', refuse(real_mkdtemp))
    monkeypatch.setattr(prediction, 'predict_volume', lambda *a, **k: pytest.fail('predicted before the check'))
    monkeypatch.setattr(sys, 'argv', ['predict.py', '--name', 'tiny', '--checkpoints_dir', str(tiny_checkpoint),
                                      '--gpu_ids', '-1', '--input', str(tmp_path / 'mr.nii.gz'), '--output',
                                      str(out), '--no_progress'])
    message = cli_error(capsys, predict.main)
    assert message == (f'predict.py: error: cannot write {out}: {disk.mount_point(str(out))} is mounted read-only')
    assert os.listdir(tmp_path / 'readonly') == []


# ----------------------------------------------------------------------------- 5. odd volumes

def identity_generator():
    from inference.loading import PredictSettings, TrainedGenerator
    settings = PredictSettings('mr', 'ct', 16, 'resize', 'xyz', 'mean', 1, (-1024.0, 3000.0), (0.5, 99.5), 1e-3)
    return TrainedGenerator(torch.nn.Identity(), settings, torch.device('cpu'), 'identity')


def test_one_slice_volume_predicts_every_plane():
    from inference.predictor import predict_volume
    from util.image_io import reference_image
    data = np.random.default_rng(0).uniform(100, 900, (48, 56, 1)).astype(np.float32)
    flipped = np.diag([-1.0, 1.0, -1.0, 1.0])                 # the one-slice axis is flipped to reach RAS
    result = predict_volume(identity_generator(), data, reference_image(data, flipped), progress=False)
    assert result.n_slices == 48 + 56 + 1 and result.fused.shape == (48, 56, 1)


def thin_volume(gap: int) -> np.ndarray:
    """1000x4x4 MR: tissue (~800) along the whole length, cut every 50 voxels by a dark layer ``gap`` voxels thick
    across the whole 4x4 section (bone, air), as any layer of a volume this thin does."""
    data = 800 + np.random.default_rng(1).normal(0, 15, (1000, 4, 4))
    for g in range(gap):
        data[g::50] = 5
    return data.astype(np.float32)


def test_body_mask_of_a_thin_volume_keeps_the_whole_body():
    from util.body_mask import body_mask
    data = thin_volume(1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        mask = body_mask([(data, 'mr')])
    assert mask.sum() == 16 * (1000 - 20)                    # all tissue: only the 20 dark layers are left out
    apart = thin_volume(5)                                   # layers too thick to bridge: said, naming the volume
    with pytest.warns(UserWarning, match=r'thin: the computed body mask keeps 720 of its 14400 tissue voxels \(the '
                                         r'largest of 20 separate parts\)'):
        body_mask([(apart, 'mr')], 'thin')


# ----------------------------------------------------------------------------- 6. chunk truncated while mapped

TRUNCATE = '''
import os, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_edge_failures import small_cache
from pathlib import Path
cache, stem, features, reader = small_cache(Path({folder!r}), (64, 8, 8))   # 8 KiB rows: two pages each
features_read = reader()
assert features_read.read(('s', 'z', 0))[1]                 # mapped and read
os.truncate(stem + '.npy', 8192)                             # shortened by another process to its first row
feature, cached = features_read.read(('s', 'z', 2))          # its pages are past the new end: SIGBUS if touched
assert not cached and not os.path.exists(stem + '.npy')
print('survived')
'''


def test_chunk_truncated_while_mapped_is_reported_and_rebuilt(tmp_path):
    code = TRUNCATE.format(root=str(ROOT), tests=str(ROOT / 'tests'), folder=str(tmp_path))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, f'exit {proc.returncode} (SIGBUS is -7): {proc.stderr[-2000:]}'
    assert 'survived' in proc.stdout
    assert 'is damaged (' in proc.stderr and 'is truncated: ' in proc.stderr and 'rebuilt at the next epoch' in \
        proc.stderr


def test_mapped_files_check_every_access(tmp_path):
    from util.mapped import MappedFiles, TruncatedFileError
    path = str(tmp_path / 'a.npy')
    np.save(path, np.arange(4096, dtype=np.float32))
    maps = MappedFiles(2)
    assert maps.get(path)[4095] == 4095
    full = os.path.getsize(path)
    os.truncate(path, full - 4096)
    with pytest.raises(TruncatedFileError, match=rf'a.npy is truncated: {full - 4096} of its {full} bytes are left'):
        maps.get(path)
    assert len(maps) == 0 and len(pickle_round_trip(maps)) == 0


def pickle_round_trip(obj):
    import pickle
    return pickle.loads(pickle.dumps(obj))


# ----------------------------------------------------------------------------- 7. damaged checkpoints

def test_damaged_checkpoint_says_so_and_nothing_about_weights_only(tmp_path):
    noise = tmp_path / 'latest_net_G.pth'
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(RuntimeError) as info:
        safe_load(str(noise))
    assert str(info.value) == (f'checkpoint {noise}: cannot be read as a PyTorch checkpoint: the file (4096 bytes) is '
                               f'damaged (truncated or overwritten) or is not a checkpoint')
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(RuntimeError, match='the file is empty'):
        safe_load(str(tmp_path / 'empty.pth'))
    whole_model = tmp_path / 'model.pth'
    torch.save(torch.nn.Linear(1, 1), whole_model)
    with pytest.raises(RuntimeError) as info:
        safe_load(str(whole_model))
    assert 'holds Python objects besides tensors' in str(info.value) and 'store a state_dict' in str(info.value)
    for message in (str(info.value),):
        assert 'weights_only' not in message and 'will likely succeed' not in message


# ----------------------------------------------------------------------------- 8. visdom only for a display

def test_training_display_off_needs_no_visdom(tmp_path, monkeypatch, capsys):
    import util
    monkeypatch.setitem(sys.modules, 'visdom', None)                # not installed: import visdom fails
    monkeypatch.delitem(sys.modules, 'util.visualizer', raising=False)
    monkeypatch.setattr(util, 'visualizer', None, raising=False)
    visualizer = importlib.import_module('util.visualizer')
    opt = type('opt', (), {'name': 'v', 'display_id': -1, 'isTrain': True, 'no_html': True, 'display_winsize': 64,
                           'display_ncols': 4, 'checkpoints_dir': str(tmp_path), 'display_server': 'localhost',
                           'display_port': 1, 'display_env': 'main'})()
    assert visualizer.Visualizer(opt).vis is None
    assert visualizer.connect_visdom('localhost', 1, 'main') is None          # a display asked for: one warning
    assert 'visdom is not installed' in capsys.readouterr().err


# ----------------------------------------------------------------------------- 9. MRNet's crop size

def test_mrnet_refuses_a_crop_size_before_any_work(tmp_path):
    from options.train_options import TrainOptions
    with pytest.raises(ValueError, match=r'--netG sam_unet needs --crop_size to be a multiple of 256 \(8 stride-2 '
                                         r'stages: 256, 512, ...\); got 128'):
        TrainOptions().parse(['--model', 'mrnet', '--crop_size', '128', '--gpu_ids', '-1', '--checkpoints_dir',
                              str(tmp_path / 'ck'), '--name', 'm'], setup_device=False)
    assert not (tmp_path / 'ck').exists()                   # no run folder, no data, no SAM cache


def test_the_toolkits_warnings_are_one_line_and_others_keep_pythons_form():
    """Under run_cli a UserWarning raised in the toolkit's code reads 'predict.py: warning: <message>' (no file,
    line or category); one raised in a library keeps Python's 'file:line: Category: message'."""
    code = ('import sys, warnings\nsys.argv = ["predict.py"]\nfrom util.cli import run_cli\n'
            'def main():\n'
            '    warnings.warn_explicit("Laterality left empty", UserWarning, '
            f'{str(ROOT / "inference" / "x.py")!r}, 7)\n'
            '    warnings.warn_explicit("old API", UserWarning, "/usr/lib/python3/site-packages/lib/y.py", 9)\n'
            '    warnings.warn_explicit("going away", DeprecationWarning, '
            f'{str(ROOT / "util" / "z.py")!r}, 3)\n'
            'warnings.simplefilter("always")\nrun_cli(main)\n')
    err = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, 'PYTHONPATH': str(ROOT)}).stderr
    lines = err.splitlines()
    assert lines[0] == 'predict.py: warning: Laterality left empty'
    assert lines[1] == '/usr/lib/python3/site-packages/lib/y.py:9: UserWarning: old API'
    assert any(line == f'{ROOT / "util" / "z.py"}:3: DeprecationWarning: going away' for line in lines[2:])
