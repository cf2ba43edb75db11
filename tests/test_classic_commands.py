"""The classic toolkit's regression commands, run as a user would, on tiny datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, _pattern, run_script
from models import networks
from util.checkpoint import read_network_file

TRAIN, TEST = str(ROOT / 'train.py'), str(ROOT / 'test.py')


def generator(path: Path, netG: str, ngf: int, norm: str, dropout: bool) -> torch.nn.Module:
    """The generator stored in ``path`` (3 -> 3 channels), in eval mode."""
    state, _, _ = read_network_file(str(path))
    net = networks.define_G(3, 3, ngf, netG, norm, dropout)
    net.load_state_dict(state)
    return net.eval()


def assert_recomputed(images: Path, source: str, steps: list[tuple[str, torch.nn.Module, str]]) -> None:
    """For each (input visual, generator, output visual): the saved raw output ``<source>_<output>.npy`` equals the
    checkpoint's generator applied to the saved raw input (weights other than the checkpoint's would not)."""
    def load(visual: str) -> torch.Tensor:
        return torch.from_numpy(np.load(images / f'{source}_{visual}.npy')).permute(2, 0, 1)[None]
    for visual_in, net, visual_out in steps:
        with torch.no_grad():
            y = net(load(visual_in))
        np.testing.assert_allclose(y.numpy(), load(visual_out).numpy(), rtol=0, atol=2e-5,
                                   err_msg=f'{source}_{visual_out} is not what the checkpoint computes')


def test_cycle_gan_train_then_test_one_direction(unaligned_root: Path, tmp_path: Path):
    root = str(unaligned_root)
    run_script(TRAIN, '--model', 'cycle_gan', '--name', 'temp_cyclegan', '--dataroot', root, '--n_epochs', '1',
               '--n_epochs_decay', '0', '--save_latest_freq', '10', '--print_freq', '1', '--display_id', '-1',
               '--gpu_ids', '-1', '--num_threads', '0', cwd=tmp_path)
    ckpt = tmp_path / 'checkpoints' / 'temp_cyclegan'
    for name in ('G_A', 'G_B', 'D_A', 'D_B'):
        assert (ckpt / f'latest_net_{name}.pth').exists()
        assert (ckpt / f'1_net_{name}.pth').exists()
    log = (ckpt / 'loss_log.txt').read_text()
    assert 'cycle_A' in log and '(epoch: 1' in log
    assert 'lambda_identity' in (ckpt / 'train_opt.txt').read_text()

    run_script(TEST, '--model', 'test', '--name', 'temp_cyclegan', '--dataroot', root, '--num_test', '1',
               '--model_suffix', '_A', '--no_dropout', '--gpu_ids', '-1', '--save_raw', cwd=tmp_path)
    out = tmp_path / 'results' / 'temp_cyclegan' / 'test_latest'
    assert (out / 'index.html').exists()
    pngs = sorted(p.name for p in (out / 'images').glob('*.png'))
    assert len(pngs) == 2 and any(p.endswith('_real.png') for p in pngs) and any(p.endswith('_fake.png') for p in pngs)
    source = pngs[0].rsplit('_', 1)[0]
    g_a = generator(ckpt / 'latest_net_G_A.pth', 'resnet_9blocks', 64, 'instance', False)
    assert_recomputed(out / 'images', source, [('real', g_a, 'fake')])


def test_pix2pix_train_then_test(aligned_root: Path, tmp_path: Path):
    root = str(aligned_root)
    proc = run_script(TRAIN, '--model', 'pix2pix', '--name', 'temp_pix2pix', '--dataroot', root, '--n_epochs', '1',
                      '--n_epochs_decay', '1', '--save_latest_freq', '10', '--display_id', '-1', '--gpu_ids', '-1',
                      '--num_threads', '0', cwd=tmp_path)
    assert 'End of epoch 2 / 2' in proc.stdout
    assert 'epoch 2/2' in proc.stderr and ('it/s' in proc.stderr or 's/it' in proc.stderr)  # tqdm bar with rate
    ckpt = tmp_path / 'checkpoints' / 'temp_pix2pix'
    opt_txt = (ckpt / 'train_opt.txt').read_text()
    assert 'unet_256' in opt_txt and '[default: 100]' in opt_txt  # n_epochs_decay 1 marked non-default
    run_script(TEST, '--model', 'pix2pix', '--name', 'temp_pix2pix', '--dataroot', root, '--num_test', '1',
               '--gpu_ids', '-1', '--eval', '--save_raw', cwd=tmp_path)
    out = tmp_path / 'results' / 'temp_pix2pix' / 'test_latest'
    html = (out / 'index.html').read_text()
    for visual in ('real_A', 'fake_B', 'real_B'):
        assert (out / 'images' / f'0_{visual}.png').exists()
        assert f'0_{visual}.png' in html
    assert Image.open(out / 'images' / '0_fake_B.png').size == (256, 256)
    assert (out / 'metrics.csv').exists()
    g = generator(ckpt / 'latest_net_G.pth', 'unet_256', 64, 'batch', True)   # --eval: dropout off, running stats
    assert_recomputed(out / 'images', '0', [('real_A', g, 'fake_B')])


def test_cycle_gan_full_test_writes_all_visuals(unaligned_root: Path, tmp_path: Path):
    root = str(unaligned_root)
    common = ['--name', 'cg', '--dataroot', root, '--gpu_ids', '-1', '--ngf', '8', '--ndf', '8',
              '--netG', 'resnet_6blocks', '--load_size', '64', '--crop_size', '64']
    run_script(TRAIN, '--model', 'cycle_gan', *common, '--n_epochs', '1', '--n_epochs_decay', '0', '--display_id',
               '0', '--num_threads', '0', cwd=tmp_path)
    run_script(TEST, '--model', 'cycle_gan', '--dataset_mode', 'unaligned', *common, '--save_raw', cwd=tmp_path)
    images = tmp_path / 'results' / 'cg' / 'test_latest' / 'images'
    for visual in ('real_A', 'fake_B', 'rec_A', 'real_B', 'fake_A', 'rec_B'):
        assert (images / f'testA_0_{visual}.png').exists(), visual
    ckpt = tmp_path / 'checkpoints' / 'cg'
    g_a, g_b = (generator(ckpt / f'latest_net_{n}.pth', 'resnet_6blocks', 8, 'instance', False) for n in ('G_A', 'G_B'))
    assert_recomputed(images, 'testA_0', [('real_A', g_a, 'fake_B'), ('fake_B', g_b, 'rec_A'),
                                          ('real_B', g_b, 'fake_A'), ('fake_A', g_a, 'rec_B')])
    # the default --num_test runs the whole test set
    assert len(list(images.glob('*_fake_B.png'))) == 2


def test_classic_checkpoint_with_instance_norm_statistics_loads(unaligned_root: Path, tmp_path: Path):
    """A classic-toolkit file (plain state dict) whose InstanceNorm layers carry running statistics, as the
    classic pretrained CycleGAN files do: the extra entries are dropped, said once, and the weights used."""
    torch.manual_seed(0)
    net = networks.define_G(3, 3, 8, 'resnet_6blocks', norm='instance')
    state = dict(net.state_dict())
    extra = 0
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            c = module.num_features
            state.update({f'{name}.running_mean': torch.zeros(c), f'{name}.running_var': torch.ones(c),
                          f'{name}.num_batches_tracked': torch.tensor(0)})
            extra += 3
    assert extra == 3 * 17                                   # c7s1, 2 down, 6 x 2 residual, 2 up
    (tmp_path / 'checkpoints' / 'classic').mkdir(parents=True)
    torch.save(state, tmp_path / 'checkpoints' / 'classic' / 'latest_net_G_A.pth')
    proc = run_script(TEST, '--model', 'test', '--name', 'classic', '--dataroot', str(unaligned_root), '--num_test',
                      '1', '--model_suffix', '_A', '--netG', 'resnet_6blocks', '--ngf', '8', '--norm', 'instance',
                      '--no_dropout', '--load_size', '64', '--crop_size', '64', '--gpu_ids', '-1', '--save_raw',
                      cwd=tmp_path)
    assert proc.stdout.count(f'ignored {extra} InstanceNorm running-statistics entries') == 1
    out = tmp_path / 'results' / 'classic' / 'test_latest' / 'images'
    assert_recomputed(out, 'testA_0', [('real', net.eval(), 'fake')])      # the file's weights, not a fresh network


def test_classic_regression_command_with_the_same_names_in_train_and_test(tmp_path: Path):
    """The classic toolkit's own check (scripts/test_before_push.py): `test.py --model test --dataroot
    ./datasets/mini --num_test 1 --model_suffix _A --no_dropout` on a dataset whose trainA/ and testA/ hold the same
    file names. Only the first item is written, so it runs and writes that one image; the whole folder (--num_test
    0) would write testA/0.png and testB/0.png both as "0" and is refused before any work, naming both (exit status
    2 from the command line: test_run_folder_and_names.py)."""
    import test as test_script
    root = tmp_path / 'mini'
    rng = np.random.default_rng(4)
    for sub, n in (('trainA', 1), ('trainB', 1), ('testA', 2), ('testB', 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.stack([_pattern(rng, 64).astype(np.uint8)] * 3, -1)).save(root / sub / f'{i}.png')
    torch.manual_seed(0)
    net = networks.define_G(3, 3, 8, 'resnet_6blocks', norm='instance')
    (tmp_path / 'checkpoints' / 'temp_cyclegan').mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / 'checkpoints' / 'temp_cyclegan' / 'latest_net_G_A.pth')
    command = ['--model', 'test', '--name', 'temp_cyclegan', '--dataroot', str(root), '--model_suffix', '_A',
               '--no_dropout', '--netG', 'resnet_6blocks', '--ngf', '8', '--load_size', '64', '--crop_size', '64',
               '--gpu_ids', '-1', '--checkpoints_dir', str(tmp_path / 'checkpoints')]
    test_script.main(command + ['--num_test', '1', '--save_raw', '--results_dir', str(tmp_path / 'results')])
    images = tmp_path / 'results' / 'temp_cyclegan' / 'test_latest' / 'images'
    assert sorted(p.name for p in images.glob('*.png')) == ['0_fake.png', '0_real.png']
    assert_recomputed(images, '0', [('real', net.eval(), 'fake')])
    with pytest.raises(ValueError, match=r'testA/0\.png and .*testB/0\.png would both be saved as "0"'):
        test_script.main(command + ['--num_test', '0', '--results_dir', str(tmp_path / 'all')])
    assert not (tmp_path / 'all').exists()
