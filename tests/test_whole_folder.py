"""util/whole_folder.py: a folder of files replaced whole, by one atomic exchange where the system has it, so that a
kill at any moment leaves the old folder or the new one under its name."""
from __future__ import annotations

import os
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
