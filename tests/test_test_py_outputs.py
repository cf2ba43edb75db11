"""Where test.py writes, and what a failed write leaves: volumes written atomically (a full disk leaves no truncated
file under the final name, and the subject's error names the file), nothing written into the checkpoint folder
(test_opt.txt goes beside the results), and a read-only bind mount named as the mount point."""
from __future__ import annotations

import errno
import os
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
    try:
        page = test_script.main([*setup['args'], '--results_dir', str(tmp_path / 'results')])
    finally:
        folder.chmod(mode)
    assert snapshot() == before
    table = Path(page).parent / 'test_opt.txt'
    assert f'results_dir: {tmp_path / "results"}' in table.read_text()


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
