"""The QA page of a synthetic CT (inference/export/qa_page.py) and where predict's side outputs go
(inference/outputs.py): the checks counted by hand, the ones that must fire on a nonsense CT of +1000 HU, a full
disk while the page is written (one line naming the file, the folder whole or absent), input names with HTML
characters shown as text, and one patient's outputs in several formats that never collide."""
from __future__ import annotations

import csv
import errno
import os
import re
import socket
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from constant_checkpoints import constant_checkpoint, hu
from inference.export import qa_page
from inference.export.qa_page import qa_checks, summary_row, update_summary, write_qa_page
from inference.inputs import VolumeInput
from inference.outputs import members_path, output_files, plan_outputs
from scripts import predict
from util.cli import run_cli
from util.disk import WriteError
from util.image_io import reference_image
from volume_fixtures import write_subject

VOXEL_MM3 = 8.0
WINDOW = (-1024.0, 3000.0)


def cube_case() -> tuple[np.ndarray, np.ndarray]:
    """A 16^3 field of view with a 6^3 body (216 voxels, [4:10] on every axis; its core [5:9], 64 voxels) and a
    synthetic CT built by hand: 3 air voxels in the core and 2 in the body's edge (x = 9), 60 of bone (1000 HU),
    one of 300 HU, 103 of fat (-100 HU), 47 of soft tissue (40 HU); outside, the layer x = 10 next to the body
    (36 voxels of 40 HU: within one voxel, the skin's edge) and 2 stray tissue voxels in the far corner."""
    mask = np.zeros((16, 16, 16), bool)
    mask[4:10, 4:10, 4:10] = True
    sct = np.full(mask.shape, -1000.0)
    sct[10, 4:10, 4:10] = 40.0
    sct[15, 15, 14:16] = 40.0
    air = [(5, 5, 5), (6, 6, 6), (7, 7, 7), (9, 5, 5), (9, 6, 6)]
    rest = [tuple(v) for v in np.argwhere(mask) if tuple(v) not in air]
    for values, count in ((1000.0, 60), (300.0, 1), (-100.0, 103), (40.0, 47)):
        for voxel in rest[:count]:
            sct[voxel] = values
        rest = rest[count:]
    assert not rest
    return sct, mask


def test_checks_against_hand_counted_voxels():
    sct, mask = cube_case()
    checks = qa_checks(sct, mask, None, WINDOW, VOXEL_MM3)
    assert checks.body_share == pytest.approx(216 / 4096) and checks.body_cm3 == pytest.approx(216 * 8 / 1000)
    assert checks.air_share == pytest.approx(3 / 216)               # the 2 in the edge are partial volume
    assert checks.air_cm3 == pytest.approx(3 * 8 / 1000)
    outside = 4096 - 216 - 6 * 36                                   # beyond the body grown by one voxel (faces)
    assert checks.outside_share == pytest.approx(2 / outside) and checks.outside_cm3 == pytest.approx(0.016)
    # the CT's outline: the body (its 5 air voxels enclosed, filled) and the layer x = 10; the stray pair is apart
    assert checks.outline_dice == pytest.approx(2 * 216 / (216 + 252))
    assert checks.soft_share == pytest.approx(150 / 216)             # fat and soft tissue; 300 HU is neither
    assert checks.median_hu == pytest.approx(-30.0)                 # 108th -100 HU and 109th 40 HU of 216
    assert checks.bone_share == pytest.approx(60 / 216)             # above 300 HU, not at it
    assert checks.disagreement_p95 is None and checks.flagged_keys() == []


def test_a_ct_of_plus_1000_hu_everywhere_fails_five_checks():
    """The campaign's case: a badly trained model's +1000 HU inside and outside the body; and a haze above
    -400 HU around a plausible body (what compositing with the body mask would hide, checked without it)."""
    sct, mask = cube_case()
    nonsense = qa_checks(np.full(mask.shape, 1000.0), mask, None, WINDOW, VOXEL_MM3)
    assert nonsense.outside_share == 1.0 and nonsense.outline_dice == pytest.approx(2 * 216 / (4096 + 216))
    assert (nonsense.soft_share, nonsense.median_hu, nonsense.bone_share) == (0.0, 1000.0, 1.0)
    assert nonsense.flagged_keys() == ['outside_share', 'outline_dice', 'soft_share', 'median_hu', 'bone_share']
    haze = qa_checks(np.where(sct < -400, -200.0, sct), mask, None, WINDOW, VOXEL_MM3)
    assert haze.flagged_keys() == ['outside_share', 'outline_dice'] and haze.outside_share == 1.0


def test_window_edge_and_disagreement_figures():
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:4, 1:5] = True                      # 24 body voxels, none on a side face
    mask[0, 2, 2] = True                            # one on the x = 0 face: 25 body voxels
    sct = np.where(mask, 40.0, -1000.0)
    body = np.argwhere(mask)
    for n, (i, j, k) in enumerate(body[:6]):        # 2 at the low end, 1 at the high end, 3 below -400 HU
        sct[i, j, k] = (-1024, -1024, 3000, -500, -450, -401)[n]
    disagreement = np.zeros(mask.shape)
    disagreement[mask] = np.arange(25)              # percentiles of 0..24: 12, 22.8, 23.76
    checks = qa_checks(sct, mask, disagreement, WINDOW, voxel_mm3=8.0)
    faces = 2 * 5 * 6 + 2 * 4 * 6                   # x faces (L/R) and y faces (P/A) of the view
    assert checks.body_share == pytest.approx(25 / 120) and checks.body_cm3 == pytest.approx(0.2)
    assert checks.edge_share == pytest.approx(1 / faces)
    assert (checks.low_share, checks.high_share) == (pytest.approx(2 / 25), pytest.approx(1 / 25))
    assert checks.air_share == 0.0                  # a body 2 voxels thick is all edge: no air counted inside
    assert (checks.disagreement_p50, checks.disagreement_p95, checks.disagreement_p99) == \
        (pytest.approx(12), pytest.approx(22.8), pytest.approx(23.76))
    assert checks.flagged_keys() == ['low_share', 'high_share']


@pytest.fixture(autouse=True)
def no_histogram(monkeypatch):
    """The page's matplotlib histogram (a second per page) is not what these tests look at."""
    monkeypatch.setattr(qa_page, '_histogram_png', lambda body, window: b'histogram')


def write_page(folder, name: str = 'p', provenance=(('input', '/data/p_mr.nii.gz'),)) -> str:
    sct, mask = cube_case()
    reference = reference_image(sct.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    return write_qa_page(str(folder), name, sct + 1000, sct, None, mask, reference, WINDOW, list(provenance))[0]


class Tags(HTMLParser):
    """The start tags of a page and its text."""
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_input_names_with_html_characters_are_text_on_the_page(tmp_path):
    name = '<b>p&q</b><script>alert(1)</script>'
    path = f'/data/{name}_mr.nii.gz'
    page = write_page(tmp_path / 'qa', name, [('input', path), ('output', f'/out/{name}_sct.nii.gz')])
    parsed = Tags()
    parsed.feed(open(page, encoding='utf-8').read())
    assert 'b' not in parsed.tags and 'script' not in parsed.tags
    text = ''.join(parsed.text)
    assert f'QA: synthetic CT of {name}' in text                               # the title
    assert f'Synthetic CT of {name}: checks before planning' in text           # the heading
    assert path in text and f'/out/{name}_sct.nii.gz' in text                   # the provenance table


def test_a_full_disk_while_the_page_is_written_names_the_file_and_leaves_the_old_page(tmp_path, monkeypatch):
    folder = tmp_path / 'p_sct.nii.gz_qa'
    real, calls = Image.Image.save, []

    def full_at_third(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            with open(fp, 'wb') as f:                                            # half a file, then the disk is full
                f.write(b'\x89PNG')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, 'save', full_at_third)
    with pytest.raises(WriteError, match=r'no space left on .* while writing .*/p_sct\.nii\.gz_qa/images/z_2\.png'):
        write_page(folder)
    assert os.listdir(tmp_path) == []                                           # absent, no temporary folder
    monkeypatch.setattr(Image.Image, 'save', real)
    page = write_page(folder, 'first')
    before = {f: open(os.path.join(r, f), 'rb').read() for r, _, fs in os.walk(folder) for f in fs}
    calls.clear()
    monkeypatch.setattr(Image.Image, 'save', full_at_third)
    with pytest.raises(WriteError):
        write_page(folder, 'second')
    assert os.listdir(tmp_path) == ['p_sct.nii.gz_qa']                          # the first page, whole
    assert {f: open(os.path.join(r, f), 'rb').read() for r, _, fs in os.walk(folder) for f in fs} == before
    assert 'Synthetic CT of first' in open(page, encoding='utf-8').read()


def test_a_killed_writers_leftover_is_removed_by_the_next_write(tmp_path):
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()                                                                  # a process id that has ended
    leftover = tmp_path / f'.p_qa.{socket.gethostname()}-{gone.pid}.x1y2.partial'
    running = tmp_path / f'.p_qa.{socket.gethostname()}-{os.getpid()}.z3.partial'    # a live writer's: kept
    for folder in (leftover, running):
        (folder / 'images').mkdir(parents=True)
    write_page(tmp_path / 'p_qa')
    assert sorted(os.listdir(tmp_path)) == [running.name, 'p_qa']


def test_one_patients_outputs_in_every_format_never_collide(tmp_path):
    """NIfTI, NIfTI uncompressed, MHA, NRRD and a DICOM series of one patient into one folder, with every side
    output: no two share a path, and each side output's name says whose it is."""
    item = VolumeInput('p', str(tmp_path / 'p_mr.nii.gz'))
    out = str(tmp_path / 'out')
    plans = [plan_outputs([item], os.path.join(out, f'p_sct{ext}'), 'ct', 'xyz', True, True, qa=True)[0]
             for ext in ('.nii.gz', '.nii', '.mha', '.nrrd')]
    plans += plan_outputs([VolumeInput('p', str(tmp_path / 'dicom'), ext='dicom')], out, 'ct', 'xyz', True, True,
                          fmt='dicom', qa=True)
    paths = [f for p in plans for f in [*output_files(p), members_path(p.fused)]]
    assert len(paths) == len(set(paths)) == 5 * 7
    named = {os.path.relpath(f, out) for f in paths}
    assert {'p_sct.nii.gz_qa', 'p_sct.mha_qa', 'p_sct_qa', 'p_sct.nii.gz_members.json', 'p_sct_members.json',
            'p_sct_x.nii.gz', 'p_sct_x.mha', 'p_sct_dicom_x.nii.gz', 'p_sct_dicom_disagreement.nii.gz'} <= named


def test_the_summary_keeps_a_row_per_output_and_replaces_the_same_output(tmp_path):
    sct, mask = cube_case()
    checks = qa_checks(sct, mask, None, WINDOW, VOXEL_MM3)
    for output, page in (('a.nii.gz', 'one'), ('a.mha', 'two'), ('a.nii.gz', 'three')):
        update_summary(str(tmp_path), summary_row('a', checks, {'output': str(tmp_path / output), 'qa_page': page}))
    with open(tmp_path / 'predict_summary.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(os.path.basename(r['output']), r['qa_page']) for r in rows] == [('a.mha', 'two'), ('a.nii.gz', 'three')]
    assert rows[0]['median_hu'] == '-30.0' and rows[0]['flags'] == ''


def test_predict_flags_a_constant_ct_beside_its_other_format_and_a_full_disk_exits_2(tmp_path, monkeypatch, capsys):
    """The campaign's three cases through predict: a generator giving about +1000 HU everywhere (not composited:
    a whole-slice model) gets five checks flagged; the same patient as NIfTI then MHA into one folder gives both;
    a full disk while the next page is written exits 2 with one line naming the image, its page absent."""
    constant_checkpoint(tmp_path / 'ck', 'bone', 0.006)                       # hu(0.006): 1000.1 HU
    mr = write_subject(tmp_path / 'data', 'p') / 'mr.nii.gz'
    args = ['--name', 'bone', '--checkpoints_dir', str(tmp_path / 'ck'), '--gpu_ids', '-1', '--no_progress',
            '--input', str(mr), '--planes', 'z']
    out = tmp_path / 'out'
    for ext in ('.nii.gz', '.mha'):
        predict.main([*args, '--output', str(out / f'p_sct{ext}')])
    with open(out / 'predict_summary.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r['output']) for r in rows] == ['p_sct.nii.gz', 'p_sct.mha']
    assert {r['flags'] for r in rows} == {'outside_share outline_dice soft_share median_hu bone_share'}
    assert float(rows[0]['median_hu']) == pytest.approx(hu(0.006), abs=0.5)
    monkeypatch.setattr(Image.Image, 'save', lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, 'full')))
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: predict.main([*args, '--output', str(out / 'p_sct.nrrd')]))
    error = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and 'Traceback' not in '\n'.join(error)
    assert re.fullmatch(r'.*error: no space left on .* while writing .*/p_sct\.nrrd_qa/images/z_0\.png .* free.*'
                        r'\(.*/p_sct\.nrrd is written; its QA page is not\)', error[0])
    assert sorted(os.listdir(out)) == ['p_sct.mha', 'p_sct.mha_qa', 'p_sct.nii.gz', 'p_sct.nii.gz_qa', 'p_sct.nrrd',
                                       'predict_summary.csv']
