"""Ensembles whose members really differ (generators that output -0.6, -0.4 and 0.5 everywhere), fused by test.py
and predict, checked against hand values; the mean and the median of fuse() where they differ; and predict feeding
a 2.5D checkpoint the neighbouring slices."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import test as test_script
from constant_checkpoints import CT_HIGH, CT_LOW, MODEL, constant_checkpoint, hu, tiny_dataset
from inference.test_time import fuse
from scripts import predict
from util.image_io import read_image, reference_image
from inference.export.volume_file import write_image

MEMBERS = {'m0': -0.6, 'm1': -0.4, 'm2': 0.5}      # median -0.4 (183.2 HU), mean -1/6 (652.7 HU); without the
NAMES = ','.join(MEMBERS)                           # first: 0.05 both, without the last: -0.5 both
BY_HAND = {'median': hu(-0.4), 'mean': hu(-1 / 6)}
SPREAD_HU = float(np.std(list(MEMBERS.values()))) * (CT_HIGH - CT_LOW) / 2     # the members' std, in HU


@pytest.fixture(scope='module')
def members(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('members')
    for name, value in MEMBERS.items():
        constant_checkpoint(root / 'checkpoints', name, value, '--input_nc', '1')
    return {'root': root, 'data': tiny_dataset(root), 'checkpoints': root / 'checkpoints'}


def body(data: Path) -> np.ndarray:
    return read_image(str(data / 'b' / 'mask.nii.gz'))[0] > 0


def test_fuse_median_is_not_the_mean():
    """Odd and even numbers of members, values whose mean and median differ (4 and 2; 5 and 4)."""
    odd = torch.tensor([9.0, 1.0, 2.0]).view(3, 1, 1, 1, 1)
    even = torch.tensor([11.0, 1.0, 6.0, 2.0]).view(4, 1, 1, 1, 1)
    assert fuse(odd, 'median')[0].item() == pytest.approx(2.0)
    assert fuse(odd, 'mean')[0].item() == pytest.approx(4.0)
    assert fuse(even, 'median')[0].item() == pytest.approx(4.0)           # average of the middle two, 2 and 6
    assert fuse(even, 'mean')[0].item() == pytest.approx(5.0)
    assert fuse(odd, 'median')[1].item() == pytest.approx(np.std([9, 1, 2]))


def test_test_py_reads_each_member_file_twice_at_most(members, tmp_path, monkeypatch):
    """test.py of an ensemble loads each member's generator file once for its stored options (asked for by many
    checks) and once for its weights, not once per question."""
    loads: dict[str, int] = {}
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        loads[str(f)] = loads.get(str(f), 0) + 1
        return real_load(f, *args, **kwargs)
    monkeypatch.setattr(torch, 'load', counting_load)
    test_script.main([*MODEL, '--dataroot', str(members['data']), '--checkpoints_dir', str(members['checkpoints']),
                      '--results_dir', str(tmp_path), '--name', 'm0,m1', '--planes', 'z', '--input_nc', '1'])
    assert {Path(k).parent.name: v for k, v in loads.items() if k.endswith('_net_G.pth')} == {'m0': 2, 'm1': 2}


def test_test_py_fuses_every_member_with_the_median(members, tmp_path):
    """test.py --name m0,m1,m2 --ensemble_fuse median: the fused volume is the median member (183.2 HU; the mean
    would be 652.7, leaving out the first or last member 1088.6 or -18 HU), the disagreement the members' std."""
    results = tmp_path / 'results'
    test_script.main([*MODEL, '--dataroot', str(members['data']), '--checkpoints_dir', str(members['checkpoints']),
                      '--results_dir', str(results), '--name', NAMES, '--ensemble_fuse', 'median', '--planes', 'z',
                      '--input_nc', '1'])
    folder = results / 'm0+m1+m2' / 'test_latest'
    inside = body(members['data'])
    fused = read_image(str(folder / 'volumes' / 'b_fake_B_fused.nii.gz'))[0]
    np.testing.assert_allclose(fused[inside], BY_HAND['median'], atol=0.05)
    spread = read_image(str(folder / 'volumes' / 'b_fake_B_disagreement.nii.gz'))[0]
    np.testing.assert_allclose(spread[inside], SPREAD_HU, rtol=1e-4)
    record = json.loads((folder / 'ensemble.json').read_text())
    assert record['fuse'] == 'median'
    assert [Path(m['checkpoint']).parent.name for m in record['members']] == list(MEMBERS)


@pytest.mark.parametrize('fusion', ['median', 'mean'])
def test_predict_fuses_every_member_as_asked(members, tmp_path, fusion):
    out = tmp_path / 'pred'
    predict.main(['--name', NAMES, '--checkpoints_dir', str(members['checkpoints']), '--gpu_ids', '-1',
                  '--no_progress', '--no_qa', '--planes', 'z', '--disagreement', '--ensemble_fuse', fusion,
                  '--input', str(members['data'] / 'b'), '--output', str(out)])
    inside = body(members['data'])
    np.testing.assert_allclose(read_image(str(out / 'b_sct.nii.gz'))[0][inside], BY_HAND[fusion], atol=0.05)
    np.testing.assert_allclose(read_image(str(out / 'b_sct_disagreement.nii.gz'))[0][inside], SPREAD_HU, rtol=1e-4)
    [record] = [json.loads(p.read_text()) for p in out.glob('*members.json')]     # the ensemble's record
    assert record['fuse'] == fusion
    assert [Path(m['checkpoint']).parent.name for m in record['members']] == list(MEMBERS)


# ----------------------------------------------------------------------------- 2.5D input in predict

class Channel(torch.nn.Module):
    """Stands in for a 2.5D generator: returns input channel ``k`` (0: the slice below, 2: the slice above)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.k:self.k + 1].clone()


@pytest.mark.parametrize('channel, step', [(0, -1), (2, 1)])
def test_predict_gives_a_2_5d_checkpoint_the_neighbouring_slices(tmp_path, monkeypatch, channel, step):
    """--context_slices 1: an axial slice k comes with k-1 and k+1 (edges replicated). A network that returns one
    neighbour writes, at slice k, the hand-mapped MR of slice k-1 (or k+1): a z-ramp tells them apart."""
    constant_checkpoint(tmp_path / 'checkpoints', 'ctx', 0.0, '--context_slices', '1')
    from inference import loading
    real = loading.load_generator

    def load(*args, **kwargs):
        generator = real(*args, **kwargs)
        assert generator.settings.context == 1 and generator.settings.input_nc == 3
        generator.net = Channel(channel)
        return generator
    monkeypatch.setattr(loading, 'load_generator', load)
    shape = (32, 32, 10)                    # axial slices of the 32x32 training size: not resampled
    k = np.arange(shape[2])
    mr = np.broadcast_to(100.0 + 40 * k, shape).astype(np.float32)
    write_image(mr, reference_image(mr, np.eye(4)), str(tmp_path / 'mr.nii.gz'))
    ones = np.ones(shape, np.float32)
    write_image(ones, reference_image(ones, np.eye(4)), str(tmp_path / 'mask.nii.gz'))
    predict.main(['--name', 'ctx', '--checkpoints_dir', str(tmp_path / 'checkpoints'), '--gpu_ids', '-1',
                  '--no_progress', '--no_qa', '--planes', 'z', '--input', str(tmp_path / 'mr.nii.gz'),
                  '--mask', str(tmp_path / 'mask.nii.gz'), '--output', str(tmp_path / 'sct.nii.gz')])
    low, high = np.percentile(mr, (0.5, 99.5))                  # by hand: body percentiles -> [-1, 1] -> HU
    unit = np.clip(2 * (100.0 + 40 * k - low) / (high - low) - 1, -1, 1)
    neighbour = np.clip(k + step, 0, shape[2] - 1)
    sct = read_image(str(tmp_path / 'sct.nii.gz'))[0]
    np.testing.assert_allclose(sct, np.broadcast_to(hu(unit[neighbour]), shape), atol=0.05)
