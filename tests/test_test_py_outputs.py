"""Where test.py writes, and what a failed write leaves: volumes written atomically (a full disk leaves no truncated
file under the final name, and the subject's error names the file), nothing written into the checkpoint folder
(test_opt.txt goes beside the results), and a read-only bind mount named as the mount point."""
from __future__ import annotations

import errno
import json
import os
import resource
import time
from pathlib import Path

import nibabel as nib
import pytest

import test as test_script
from constant_checkpoints import MODEL, constant_checkpoint, tiny_dataset
from util import disk


@pytest.fixture(scope='module')
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('outputs')
    constant_checkpoint(root / 'checkpoints', 'c', 0.2, '--input_nc', '1')
    data = tiny_dataset(root)
    return {'checkpoints': root / 'checkpoints',
            'args': [*MODEL, '--input_nc', '1', '--dataroot', str(data), '--checkpoints_dir', str(root / 'checkpoints'),
                     '--name', 'c', '--planes', 'xz']}


def test_a_full_disk_leaves_no_truncated_volume_and_names_the_file(setup, tmp_path, monkeypatch):
    """The disk fills up half-way through the disagreement volume (nibabel writes part of it, then ENOSPC): the
    subject fails with one line naming that file; no file under its name, no temporary one, the others whole."""
    real_save = nib.save

    def full_disk(image, path):
        if str(path).endswith('_disagreement.nii.gz'):
            with open(path, 'wb') as f:
                f.write(b'\x1f\x8b\x08\x00' + b'\0' * 100)       # the start of a gzip stream, then the disk is full
            raise OSError(errno.ENOSPC, 'No space left on device')
        real_save(image, path)
    monkeypatch.setattr(nib, 'save', full_disk)
    results = tmp_path / 'results'
    with pytest.raises(RuntimeError) as info:
        test_script.main([*setup['args'], '--results_dir', str(results)])
    volumes = results / 'c' / 'test_latest' / 'volumes'
    target = volumes / 'b_fake_B_disagreement.nii.gz'
    assert f'b: no space left on {disk.mount_point(str(volumes))} while writing {target} (' in str(info.value)
    assert sorted(os.listdir(volumes)) == [f'b_fake_B_{p}.nii.gz' for p in ('fused', 'x', 'z')]
    for name in os.listdir(volumes):
        assert nib.load(str(volumes / name)).get_fdata().shape == (12, 14, 10)


def test_test_py_writes_nothing_into_the_checkpoint_folder(setup, tmp_path):
    """A read-only checkpoint folder (here: read-only to a user; as root, every file must stay as it was) is
    tested with a writable --results_dir: test_opt.txt goes beside the results."""
    folder = setup['checkpoints'] / 'c'

    def snapshot() -> dict:
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}
    before = snapshot()
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    start = time.perf_counter()
    try:
        page = test_script.main([*setup['args'], '--results_dir', str(tmp_path / 'results')])
    finally:
        folder.chmod(mode)
    assert snapshot() == before
    table = Path(page).parent / 'test_opt.txt'
    assert f'results_dir: {tmp_path / "results"}' in table.read_text()
    # cost.json beside it: one volume (subject b) from its 12 x and 10 z slices, the model's time, the peak memory
    cost = json.loads((Path(page).parent / 'cost.json').read_text())
    assert (cost['items'], cost['volumes'], cost['peak_gpu_mib']) == (22, 1, None)
    assert 0 < cost['predict_seconds'] < time.perf_counter() - start
    assert 100 < cost['peak_rss_mib'] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_read_only_results_dir_is_refused_before_any_work(setup, tmp_path, monkeypatch):
    """--results_dir on read-only media (EROFS where the folder would be made): one line naming test_opt.txt and the
    mount, before the dataset is even read; nothing left behind."""
    results = tmp_path / 'ro'
    results.mkdir()
    real_mkstemp = disk.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if str(dir).startswith(str(results)):
            raise OSError(errno.EROFS, 'Read-only file system')
        return real_mkstemp(*args, dir=dir, **kwargs)
    monkeypatch.setattr(disk.tempfile, 'mkstemp', read_only)
    monkeypatch.setattr(disk, 'mounts', lambda: ['/', str(results)])
    monkeypatch.setattr(test_script, 'create_dataset', lambda opt: pytest.fail('the dataset was read first'))
    with pytest.raises(disk.WriteError) as info:
        test_script.main([*setup['args'], '--results_dir', str(results)])
    assert str(info.value) == (f'cannot write {results / "c" / "test_latest" / "test_opt.txt"}: {results} is mounted '
                               f'read-only')
    assert os.listdir(results) == []


def test_a_read_only_bind_mount_is_named_not_the_root(tmp_path, monkeypatch):
    """A folder bind-mounted read-only onto the same file system is invisible to os.path.ismount: the mount table
    tells, so the refusal names that folder, not '/'."""
    mounted = tmp_path / 'ckpt'
    (mounted / 'run').mkdir(parents=True)
    monkeypatch.setattr(disk, 'mounts', lambda: ['/', str(tmp_path.parent), str(mounted), '/proc'])
    target = mounted / 'run' / 'test_opt.txt'
    assert disk.describe(OSError(errno.EROFS, 'Read-only file system'), str(target)) == \
        f'cannot write {target}: {mounted} is mounted read-only'
    assert disk.mount_point(str(tmp_path / 'other' / 'x')) == str(tmp_path.parent)     # the deepest above it
    monkeypatch.setattr(disk, 'mounts', lambda: [])                                     # no mount table: ismount
    assert os.path.ismount(disk.mount_point(str(target)))


@pytest.mark.parametrize('kind', ['png', 'raw'])
def test_a_full_disk_leaves_no_truncated_result_image(tmp_path, monkeypatch, kind):
    """A result image (PNG, or --save_raw's .npy) whose write fills the disk half-way: the error names the file,
    and neither a truncated file under its name nor a temporary file is left; an earlier complete file stays."""
    import numpy as np
    from PIL import Image
    from util import util
    path = tmp_path / ('a_fake_B.png' if kind == 'png' else 'a_fake_B.npy')
    util.save_image(np.full((4, 4), 7, np.uint8), str(path)) if kind == 'png' else np.save(path, np.ones(3))
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        target = args[1] if kind == 'png' else args[0]       # Image.save(self, fp, ...), np.save(file, ...)
        target.write(b'\x89PNG' + b'\0' * 50)                # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(*((Image.Image, 'save') if kind == 'png' else (np, 'save')), full_disk)
    with pytest.raises(disk.WriteError, match=f'no space left on .* while writing {path}'):
        if kind == 'png':
            util.save_image(np.zeros((4, 4), np.uint8), str(path))
        else:
            util.save_raw(np.zeros((4, 4)), str(path.with_suffix('')))
    assert os.listdir(tmp_path) == [path.name] and path.read_bytes() == before
