"""A 3D network over whole volumes (inference/sliding_window.py, inference/volume_model.py): Gaussian-blended
sliding windows, mirrored TTA, the 3D / slice-wise refusals, and the 3D flags from the checkpoint into test.py and
predict. Stub networks on 16^3-24^3 volumes; the one real network is a 16^3 DynUNet of width 4 (no training)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from inference.loading import PredictSettings, TrainedGenerator, load_generator, member_settings_conflict
from inference.predictor import predict_volume
from inference.reassembly import VolumeAssembler
from inference.sliding_window import check_overlap, sliding_window, translate_volume
from inference.volume_model import check_checkpoint_kind
from models import create_model
from options.test_options import TestOptions
from options.train_options import TrainOptions


class Ramp(nn.Module):
    """x + 0.01 * (i + 2 j + 3 k) over each window's own voxel coordinates (i, j, k): neither flip-symmetric nor
    translation-equivariant, so a window's output says where the window was and which way it was flipped."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, j, k = torch.meshgrid(*[torch.arange(n, dtype=x.dtype) for n in x.shape[-3:]], indexing='ij')
        return x + 0.01 * (i + 2 * j + 3 * k)


def test_identity_returns_the_volume_and_weights_sum_to_one():
    """Windows of 16 over 20 x 23 x 12 voxels (uneven steps; the last axis shorter than the window, padded and cut
    off): the blended identity is the volume itself."""
    volume = torch.rand(2, 20, 23, 12) * 2 - 1
    out, spread = sliding_window(nn.Identity(), volume, (16, 16, 16), overlap=0.5)
    assert out.shape == volume.shape and spread is None
    assert torch.allclose(out, volume, atol=1e-6)


def test_convolution_over_windows_equals_a_whole_volume_pass():
    """A zero-padded 3x3x3 convolution sees its padding at every window's faces; where the windows overlap by half,
    the Gaussian leaves those faces a weight of about 1e-3 of the other window's centre, so the blend equals one
    pass over the whole volume to 1e-3 (the volume's own faces are padded with zeros in both). MONAI's own map,
    whose weights are floored at 1e-3, gives near the faces an error of about 0.3 here."""
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 1, 3, padding=1)
    volume = torch.rand(1, 24, 24, 16) * 2 - 1
    out, _ = sliding_window(conv, volume, (16, 16, 16), overlap=0.5)
    with torch.no_grad():
        whole = conv(volume[None])[0]
    assert (out - whole).abs().max() < 2e-3


def test_mirrored_tta_is_the_average_of_the_eight_flips():
    """One 16^3 window of the Ramp: flipping axis a maps coordinate c to 15 - c, so the 8 mirrorings average the
    ramp to its mean 0.01 * (1 + 2 + 3) * 7.5, and their std is 0.01 * sqrt(sum_a (w_a (c_a - 7.5))^2)."""
    volume = torch.rand(1, 16, 16, 16) * 2 - 1
    plain, _ = sliding_window(Ramp(), volume, (16, 16, 16), overlap=0.5)
    out, spread = sliding_window(Ramp(), volume, (16, 16, 16), overlap=0.5, tta='flip')
    assert torch.allclose(out, volume + 0.01 * 6 * 7.5, atol=1e-5)
    assert not torch.allclose(plain, out, atol=1e-2)                # the Ramp is not flip-symmetric
    i, j, k = torch.meshgrid(*[torch.arange(16.0)] * 3, indexing='ij')
    expected = 0.01 * torch.sqrt((i - 7.5) ** 2 + (2 * (j - 7.5)) ** 2 + (3 * (k - 7.5)) ** 2)
    assert spread.shape == (1, 16, 16, 16)
    assert torch.allclose(spread[0], expected, atol=1e-5)


def test_an_ensemble_averages_its_members_and_keeps_their_spread():
    settings = PredictSettings('mr', 'ct', 256, 'resize', 'xyz', 'mean', 1, (-1024.0, 3000.0), (0.5, 99.5), 1e-3,
                               patch=(16, 16, 16))
    members = [TrainedGenerator(net, settings, torch.device('cpu'), name)
               for net, name in ((nn.Identity(), 'a'), (lambda x: x + 0.2, 'b'))]
    volume = torch.rand(1, 16, 20, 16) * 2 - 1
    out, spread = translate_volume(members, 'mean', volume)
    assert torch.allclose(out, volume + 0.1, atol=1e-5)
    assert torch.allclose(spread, torch.full_like(spread, 0.1), atol=1e-5)


def test_a_whole_volume_is_the_fused_one_and_its_spread_the_disagreement():
    """VolumeAssembler.put_volume: channels averaged, resampled onto the subject's grid; no planes; the disagreement
    of a whole volume is its spread in target units ((high - low) / 2 per unit of [-1, 1])."""
    from util.intensity import IntensityMap
    assembler = VolumeAssembler((8, 6, 4), (1.0, 1.0, 1.0), 'resize')
    spreads = VolumeAssembler((8, 6, 4), (1.0, 1.0, 1.0), 'resize', fill=0.0)
    assembler.put_volume(torch.stack([torch.full((8, 6, 4), 0.2), torch.full((8, 6, 4), 0.4)]))
    spreads.put_volume(torch.full((1, 4, 3, 2), 0.1))               # on a coarser grid: resampled
    assert assembler.planes == [] and np.allclose(assembler.fused(), 0.3)
    disagreement = assembler.disagreement(IntensityMap(-1000.0, 1000.0), spreads)
    assert disagreement.shape == (8, 6, 4) and np.allclose(disagreement, 100.0, atol=1e-3)


def test_predict_runs_a_3d_network_over_the_volume_on_its_grid():
    """predict_volume with an identity 3D network, MR -> MR: the output is the normalised input mapped back, voxel
    for voxel in the file's own (LPS-like, flipped) order."""
    rng = np.random.default_rng(0)
    data = rng.uniform(100, 900, (18, 20, 16)).astype(np.float32)
    import nibabel as nib
    reference = nib.Nifti1Image(data, np.diag([-2.0, -2.0, 3.0, 1.0]))
    settings = PredictSettings('mr', 't2', 256, 'resize', 'xyz', 'mean', 1, (-1024.0, 3000.0), (0.0, 100.0), 1e-3,
                               patch=(16, 16, 16))
    generator = TrainedGenerator(nn.Identity(), settings, torch.device('cpu'), 'identity3d')
    mask = np.ones((18, 20, 16), bool)
    result = predict_volume(generator, data, reference, mask, progress=False, outside_body='keep')
    normalised = (data - data.min()) / (data.max() - data.min()) * 2 - 1      # percentiles 0-100 of the body
    assert result.planes == {} and result.disagreement is None
    assert np.allclose(result.fused, normalised, atol=1e-4)


def test_overlap_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r'--sw_overlap 1\.0: .*\[0, 1\)'):
        check_overlap(1.0)


# -- checkpoints: the 3D flags through save and load, and the refusals ----------------------------------------

UNET3D = ['--model', 'unet3d', '--ngf', '4', '--patch_size', '16x16x32', '--target_spacing', '4,4,5', '--tta', 'flip',
          '--unet3d_residual', '--gpu_ids', '-1', '--num_threads', '0']
PIX2PIX = ['--model', 'pix2pix', '--netG', 'unet_128', '--ngf', '4', '--ndf', '4', '--crop_size', '32',
           '--output_nc', '1', '--input_nc', '1', '--dataset_mode', 'triplanar_aligned', '--gpu_ids', '-1']


def save_checkpoint(checkpoints: Path, name: str, flags: list[str]) -> None:
    opt = TrainOptions().parse([*flags, '--checkpoints_dir', str(checkpoints), '--name', name], setup_device=False)
    create_model(opt).save_networks('latest')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> Path:
    """A 3D (unet3d) and a slice-wise (pix2pix) checkpoint, untrained."""
    root = tmp_path_factory.mktemp('sw_checkpoints')
    save_checkpoint(root, 'vol', UNET3D)
    save_checkpoint(root, 'slices', PIX2PIX)
    return root


def test_every_3d_flag_reaches_predict_and_test(checkpoints):
    generator = load_generator(str(checkpoints), 'vol')
    s = generator.settings
    assert (s.patch, s.spacing, s.tta) == ((16, 16, 32), (4.0, 4.0, 5.0), 'flip')
    assert generator.net.patch_size == (16, 16, 32) and generator.options['unet3d_residual'] is True
    opt = TestOptions().parse(['--model', 'unet3d', '--name', 'vol', '--checkpoints_dir', str(checkpoints),
                               '--gpu_ids', '-1'], setup_device=False)
    assert (opt.patch_size, opt.target_spacing, opt.tta, opt.sw_overlap) == ('16x16x32', '4,4,5', 'flip', 0.5)
    assert check_checkpoint_kind(opt, ['vol']) is True


def test_3d_and_slice_checkpoints_are_refused_on_the_other_path(checkpoints):
    def options(mode: str) -> argparse.Namespace:
        return argparse.Namespace(checkpoints_dir=str(checkpoints), epoch='latest', load_iter=0, dataset_mode=mode)
    with pytest.raises(ValueError, match=r'vol/latest_net_G\.pth: vol \(a 3D network, --netG unet3d\) .*'
                                         r'--dataset_mode triplanar_aligned gives slices'):
        check_checkpoint_kind(options('triplanar_aligned'), ['vol'])
    with pytest.raises(ValueError, match=r'slices/latest_net_G\.pth: slices \(slice-wise, --netG unet_128\) .*'
                                         r'--dataset_mode patch3d gives whole volumes'):
        check_checkpoint_kind(options('patch3d'), ['slices'])
    with pytest.raises(ValueError, match=r'ensemble members vol \(a 3D network, --netG unet3d\) and slices '
                                         r'\(slice-wise, --netG unet_128\) cannot be fused'):
        check_checkpoint_kind(options('patch3d'), ['vol', 'slices'])
    assert 'cannot be fused' in member_settings_conflict(['a', 'b'], [{'netG': 'sam_unet'}, {'netG': 'unet3d'}])
