"""Options, model/dataset registries, full-precision image I/O and clear errors for bad input."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from conftest import ROOT, run_script
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.parser_flags import add_flag, find_option, has_option
from util.util import image_to_tensor, read_picture

TRAIN, TEST = str(ROOT / 'train.py'), str(ROOT / 'test.py')


def parse_train(*args: str, tmp: Path):
    return TrainOptions().parse(['--checkpoints_dir', str(tmp), '--gpu_ids', '-1', *args])


def test_model_defaults_and_saved_table(tmp_path: Path):
    opt = parse_train('--model', 'pix2pix', '--name', 'p', tmp=tmp_path)
    assert (opt.netG, opt.norm, opt.gan_mode, opt.lambda_L1, opt.dataset_mode, opt.pool_size) == \
        ('unet_256', 'batch', 'vanilla', 100.0, 'aligned', 0)
    opt = parse_train('--model', 'cycle_gan', '--name', 'c', '--lr', '0.001', tmp=tmp_path)
    assert (opt.netG, opt.no_dropout, opt.lambda_A, opt.lambda_B, opt.lambda_identity, opt.pool_size) == \
        ('resnet_9blocks', True, 10.0, 10.0, 0.5, 50)
    table = (tmp_path / 'c' / 'train_opt.txt').read_text()
    lr_line = next(line for line in table.splitlines() if line.strip().startswith('lr:'))
    assert '0.001' in lr_line and '[default: 0.0002]' in lr_line
    assert '[default' not in next(line for line in table.splitlines() if line.strip().startswith('beta1:'))
    assert opt.seed == 2024 and opt.device == torch.device('cpu') and opt.gpu_ids == []


def test_suffix_and_test_defaults(tmp_path: Path):
    opt = parse_train('--model', 'pix2pix', '--name', 'exp', '--suffix', '{model}_{netG}_size{load_size}',
                      tmp=tmp_path)
    assert opt.name == 'exp_pix2pix_unet_256_size286'
    opt = TestOptions().parse(['--checkpoints_dir', str(tmp_path), '--gpu_ids', '-1', '--name', 't'])
    assert opt.num_test == 0 and opt.model == 'test' and opt.serial_batches and opt.no_flip
    assert not (tmp_path / 't').exists()        # test.py writes test_opt.txt beside its results, never here
    assert opt.compile is False and opt.channels_last is False      # training's speed flags: off in a test run
    opt = TestOptions().parse(['--checkpoints_dir', str(tmp_path), '--name', 'm', '--model', 'mrnet', '--compile'],
                              setup_device=False)
    assert opt.compile and (opt.device, opt.rank, opt.world_size, opt.distributed) == (torch.device('cpu'), 0, 1, False)


def test_parser_flags_are_found_by_their_exact_spelling():
    parser = argparse.ArgumentParser()
    parser.add_argument('--crop_size', '-c', type=int, default=256)
    assert find_option(parser, '--crop_size').dest == find_option(parser, '-c').dest == 'crop_size'
    assert find_option(parser, '--crop') is None and not has_option(parser, '--crop') and has_option(parser, '-c')
    add_flag(parser, '--crop_size', type=int, default=1)        # there already: the first one stays
    add_flag(parser, '--load_size', type=int, default=286)
    assert vars(parser.parse_args([])) == {'crop_size': 256, 'load_size': 286}


def test_help_lists_the_flags_of_the_model_its_dataset_and_generator(tmp_path: Path):
    """As the README says: `train.py --model mrnet --help` shows MRNet's (--lambda_feature), its dataset's
    (--planes, --context_slices) and its generator's flags (--n_masks, --sam_checkpoint), then exits 0."""
    proc = run_script(str(ROOT / 'train.py'), '--model', 'mrnet', '--help', cwd=tmp_path)
    for flag in ('--lambda_feature', '--planes', '--context_slices', '--n_masks', '--sam_checkpoint', '--dataroot'):
        assert flag in proc.stdout, flag


def test_unknown_model_and_dataset_list_the_choices(tmp_path: Path):
    with pytest.raises(ValueError, match=r'unknown --model "pix3pix"; available: .*cycle_gan.*pix2pix'):
        parse_train('--model', 'pix3pix', tmp=tmp_path)
    with pytest.raises(ValueError, match=r'unknown --dataset_mode "nope"; available: .*aligned.*single'):
        parse_train('--model', 'pix2pix', '--dataset_mode', 'nope', tmp=tmp_path)


def test_missing_or_empty_dataroot_is_one_clear_error(tmp_path: Path):
    proc = run_script(TRAIN, '--model', 'pix2pix', '--dataroot', str(tmp_path / 'nowhere'), '--gpu_ids', '-1',
                      '--display_id', '0', cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert f'{tmp_path / "nowhere" / "train"} does not exist' in proc.stderr
    (tmp_path / 'empty' / 'train').mkdir(parents=True)
    proc = run_script(TRAIN, '--model', 'pix2pix', '--dataroot', str(tmp_path / 'empty'), '--gpu_ids', '-1',
                      '--display_id', '0', cwd=tmp_path, check=False)
    assert 'holds no images' in proc.stderr
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr and 'add --verbose' in proc.stderr


def test_verbose_adds_the_traceback_and_keeps_the_one_line_and_status_2(tmp_path: Path, monkeypatch, capsys):
    """--verbose (docs/reliability.md, "Exit status"): the full traceback, then the same `<program>: error: <message>`
    line, exit status 2; without it no traceback."""
    import sys
    import train as train_script
    from util.cli import run_cli
    (tmp_path / 'empty' / 'train').mkdir(parents=True)
    argv = ['train.py', '--model', 'pix2pix', '--dataroot', str(tmp_path / 'empty'), '--gpu_ids', '-1',
            '--display_id', '0', '--checkpoints_dir', str(tmp_path / 'ck')]
    for verbose in (['--verbose'], []):
        monkeypatch.setattr(sys, 'argv', argv + verbose)
        with pytest.raises(SystemExit) as info:
            run_cli(lambda: train_script.main(sys.argv[1:]))
        assert info.value.code == 2
        err = capsys.readouterr().err
        line = err.strip().splitlines()[0 if not verbose else -1]
        assert line.startswith('train.py: error: ') and 'holds no images' in line
        if verbose:
            traceback = err.split('Traceback (most recent call last):', 1)[1]
            assert 'File "' in traceback and 'train.py: error:' not in traceback.rsplit('\n', 2)[0]
            assert 'add --verbose' not in err
        else:
            assert 'Traceback' not in err and 'add --verbose' in err


def test_sixteen_bit_png_tiff_and_npy_keep_precision(tmp_path: Path):
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 256 distinct 16-bit levels
    values[0, 0] = 1  # a value 8 bits cannot hold
    Image.fromarray(values).save(tmp_path / 'a.png')
    tifffile.imwrite(tmp_path / 'a.tif', values)
    np.save(tmp_path / 'a.npy', values.astype(np.float32) / 65535)
    for name in ('a.png', 'a.tif', 'a.npy'):
        arr = read_picture(str(tmp_path / name))
        assert arr.dtype == np.float32 and arr.shape == (16, 16)
        np.testing.assert_allclose(arr * 65535, values, atol=1e-2)
    t = image_to_tensor(read_picture(str(tmp_path / 'a.png')), 1)
    assert t.shape == (1, 16, 16) and abs(float(t[0, 0, 0]) - (1 / 65535 * 2 - 1)) < 1e-7
    assert image_to_tensor(read_picture(str(tmp_path / 'a.png')), 3).shape == (3, 16, 16)


def test_unreadable_image_and_channel_mismatch_name_the_file(tmp_path: Path):
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'not a png at all')
    with pytest.raises(ValueError, match='cannot read image .*broken.png'):
        read_picture(str(bad))
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[..., 0] = 1.0
    with pytest.raises(ValueError, match=r'x.png: image has 3 channels but the model expects 1'):
        image_to_tensor(rgb, 1, 'x.png')


def test_one_channel_pix2pix_saves_one_channel_results_and_raw(tmp_path: Path):
    rng = np.random.default_rng(0)
    for phase in ('train', 'test'):
        (tmp_path / 'd' / phase).mkdir(parents=True)
        a = (rng.random((128, 128)) * 65535).astype(np.uint16)    # the load and crop size: nothing is resampled
        Image.fromarray(np.concatenate([a, 65535 - a], 1)).save(tmp_path / 'd' / phase / 'x.png')
    common = ['--model', 'pix2pix', '--name', 'gray', '--dataroot', str(tmp_path / 'd'), '--input_nc', '1',
              '--output_nc', '1', '--netG', 'unet_128', '--ngf', '8', '--ndf', '8', '--load_size', '128',
              '--crop_size', '128', '--gpu_ids', '-1', '--num_threads', '0']
    run_script(TRAIN, *common, '--n_epochs', '1', '--n_epochs_decay', '0', '--display_id', '0', cwd=tmp_path)
    run_script(TEST, *common, '--save_raw', cwd=tmp_path)
    images = tmp_path / 'results' / 'gray' / 'test_latest' / 'images'
    assert Image.open(images / 'x_fake_B.png').mode in ('L', 'I;16')
    raw = np.load(images / 'x_real_A.npy')
    assert raw.dtype == np.float32 and raw.shape[-2:] == (128, 128)
    np.testing.assert_array_equal(tifffile.imread(images / 'x_real_A.tif'), raw)
    # 16-bit input survives exactly: v / 65535 * 2 - 1 for every pixel (an 8-bit step is 0.0078)
    expected = a.astype(np.float64) / 65535 * 2 - 1
    np.testing.assert_allclose(raw.reshape(128, 128), expected, rtol=0, atol=1e-6)
    assert len(np.unique(raw)) == len(np.unique(a)) > 10000


def test_checkpoint_that_does_not_fit_names_file_options_and_keys(aligned_root: Path, tmp_path: Path):
    common = ['--model', 'pix2pix', '--name', 'fit', '--dataroot', str(aligned_root), '--netG', 'unet_128',
              '--load_size', '128', '--crop_size', '128', '--gpu_ids', '-1', '--num_threads', '0']
    run_script(TRAIN, *common, '--ngf', '8', '--ndf', '8', '--n_epochs', '1', '--n_epochs_decay', '0',
               '--display_id', '0', cwd=tmp_path)
    proc = run_script(TEST, *common, '--ngf', '16', cwd=tmp_path, check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'latest_net_G.pth does not fit the network' in err
    assert '--ngf 8' in err and '--ngf 16' in err and 'shape mismatches' in err
    proc = run_script(TEST, *common, '--ngf', '8', '--norm', 'instance', cwd=tmp_path, check=False)
    assert '--norm batch' in proc.stderr and 'unexpected keys' in proc.stderr and 'running_mean' in proc.stderr


def test_unet_rejects_sizes_it_cannot_take(aligned_root: Path, tmp_path: Path):
    proc = run_script(TRAIN, '--model', 'pix2pix', '--dataroot', str(aligned_root), '--netG', 'unet_256', '--ngf', '8',
                      '--ndf', '8', '--load_size', '100', '--crop_size', '100', '--gpu_ids', '-1', '--num_threads', '0',
                      '--display_id', '0', cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'multiples of 256' in proc.stderr
