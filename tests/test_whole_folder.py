"""util/whole_folder.py: a folder of files replaced whole, by one atomic exchange where the system has it, so that a
kill at any moment leaves the old folder or the new one under its name."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from util import whole_folder as wf


def fill(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    fill(tmp_path / 'a', one='1')
    fill(tmp_path / 'b', two='2', three='3')
    assert wf.exchange(str(tmp_path / 'a'), str(tmp_path / 'b'))          # Linux: renameat2 is there
    assert contents(tmp_path / 'a') == {'two': '2', 'three': '3'} and contents(tmp_path / 'b') == {'one': '1'}
    with pytest.raises(FileNotFoundError, match='nothing'):
        wf.exchange(str(tmp_path / 'a'), str(tmp_path / 'nothing'))


def test_a_kill_right_after_the_exchange_leaves_the_new_folder(tmp_path, monkeypatch):
    """The replacement never removes the folder first: a kill (here: in the clean-up after the exchange) leaves
    the new series whole under the folder's name; the old one is in a hidden .partial folder."""
    target = tmp_path / 'p_sct'
    with wf.whole_folder(str(target)) as tmp:
        fill(Path(tmp), **{'1.dcm': 'old', '2.dcm': 'old'})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, 'replace', killed)          # the two-rename way would lose the folder here
    monkeypatch.setattr(wf.shutil, 'rmtree', killed)
    with pytest.raises(KeyboardInterrupt):
        with wf.whole_folder(str(target)) as tmp:
            fill(Path(tmp), **{'1.dcm': 'new'})
    assert contents(target) == {'1.dcm': 'new'}
    (partial,) = [p for p in tmp_path.iterdir() if p.name.endswith('.partial')]
    assert contents(partial) == {'1.dcm': 'old', '2.dcm': 'old'}


def test_without_an_exchange_two_renames_replace_the_folder(tmp_path, monkeypatch):
    target = tmp_path / 'p_qa'
    with wf.whole_folder(str(target)) as tmp:
        fill(Path(tmp), page='old', old_only='x')
    monkeypatch.setattr(wf, 'exchange', lambda a, b: False)      # another OS, or a file system without it
    with wf.whole_folder(str(target)) as tmp:
        fill(Path(tmp), page='new')
    assert os.listdir(tmp_path) == ['p_qa'] and contents(target) == {'page': 'new'}


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    return gone.pid


def test_a_killed_writes_leftovers_go_with_the_next_write_of_the_same_file(tmp_path):
    """A synthetic CT file and a subject's slice store each leave a hidden .partial folder when killed mid-write;
    the next write of the same file or store removes it (a live writer's is kept) and leaves no other."""
    import nibabel as nib
    import numpy as np
    from data.slice_store import StoreSettings, build_subject
    from inference.export.volume_file import write_image
    from volume_fixtures import write_subject
    host, pid = socket.gethostname(), dead_pid()
    killed = [tmp_path / 'out' / f'.p_sct.nii.gz.{host}-{pid}.k1.partial',
              tmp_path / 'store' / f'.s1.{host}-{pid}.k2.partial']
    live = tmp_path / 'out' / f'.p_sct.nii.gz.{host}-{os.getpid()}.k3.partial'
    for folder in (*killed, live):
        fill(folder, half='x')
    reference = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4))
    write_image(np.ones((4, 5, 6), np.float32), reference, str(tmp_path / 'out' / 'p_sct.nii.gz'))
    assert sorted(os.listdir(tmp_path / 'out')) == sorted([live.name, 'p_sct.nii.gz'])
    write_subject(tmp_path / 'data', 's1')
    settings = StoreSettings(('mr', 'ct'), (-1024.0, 3000.0), (0.5, 99.5), 'float32', 1e-3)
    build_subject(str(tmp_path / 'data'), 's1', settings, str(tmp_path / 'store' / 's1'))
    assert os.listdir(tmp_path / 'store') == ['s1'] and sorted(os.listdir(tmp_path / 'store' / 's1')) == \
        ['meta.json', 'volumes.npy']
