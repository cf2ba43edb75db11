"""Tests for the baseline generators of models/generators/ (the paper's Tables II-III): shapes and ranges, 1 and
3 channels, size errors, full-size parameter counts, the official weight files (written here in their layouts)
loading strictly, bad files, training with --model pix2pix, save/load, and ResViT's two-stage recipe."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from generator_fixtures import (TINY, TINY_VIT, reference_hybrid, reference_swin, save_official_npz,
                                save_official_swin, tiny_options)
from models import create_model, networks
from models.layers import count_parameters
from models.generators import available_generators, base, find_generator, generator_file
from models.encoders.r50_vit import HybridConfig
from options.test_options import TestOptions
from options.train_options import TrainOptions

NAMES = ['transunet', 'swin_unet', 'resvit', 'res_cnn', 'tcgan', 'ppt']
# parameters at 256x256, 3 -> 3 channels, default flags (ngf 64); the paper's / repositories' counts are in
# the model table of docs/models.md
FULL_COUNTS = {'transunet': 105_322_291, 'swin_unet': 27_175_716, 'resvit': 123_454_083, 'res_cnn': 11_383_427,
               'tcgan': 191_159_659, 'ppt': 182_443_267}


@pytest.fixture(autouse=True)
def quiet_random_init(monkeypatch):
    monkeypatch.setattr(base, '_warned', {'R50+ViT-B/16 encoder of transunet', 'Swin-T encoder of swin_unet',
                                          'ViT-B transformer of resvit'})


def build(name: str, input_nc: int = 3, output_nc: int = 3, *extra: str, seed: int = 0,
          isTrain: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    opt = tiny_options(name, *extra)
    opt.isTrain = isTrain
    return networks.define_G(input_nc, output_nc, opt.ngf, name, 'batch', True, 'normal', 0.02, opt=opt)


def images(name: str, channels: int = 3, n: int = 2, seed: int = 0) -> torch.Tensor:
    size = TINY[name][0]
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------- registry, shapes, sizes

CLASSIC = {'unet_128': ('unet', 'Unet'), 'unet_256': ('unet', 'Unet'), 'resnet_6blocks': ('resnet', 'Resnet'),
           'resnet_9blocks': ('resnet', 'Resnet'), 'sam_unet': ('sam_unet', 'SamUNet')}


def test_every_generator_file_is_found_by_name():
    assert available_generators() == sorted(NAMES + list(CLASSIC) + ['unet3d'])     # unet3d: test_patch3d.py
    assert [find_generator(n).__name__ for n in NAMES] == ['TransUNet', 'SwinUnet', 'ResViT', 'ResCNN', 'TCGAN',
                                                           'PPT']
    assert {n: (generator_file(n), find_generator(n).__name__) for n in CLASSIC} == CLASSIC
    for unknown in ('vit', 'unet_64', 'resnet_3blocks'):   # a file's name alone does not make a variant
        with pytest.raises(ValueError, match=rf"generator '{unknown}' is not recognized; choose one of "
                                             r".*'resnet_9blocks'.*'sam_unet'.*'transunet'.*'unet_256'"):
            networks.define_G(3, 3, 8, unknown)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('input_nc, output_nc', [(1, 1), (3, 3)])
def test_output_shape_and_range(name, input_nc, output_nc):
    net = build(name, input_nc, output_nc).eval()
    with torch.no_grad():
        y = net(images(name, input_nc) * 3)   # out-of-range input still gives a valid image
    size = TINY[name][0]
    assert y.shape == (2, output_nc, size, size)
    assert torch.isfinite(y).all() and y.abs().max() <= 1 and y.std() > 0


@pytest.mark.parametrize('name, size, message', [
    ('transunet', 40, r'--netG transunet needs --crop_size to be a multiple of 16'),
    ('resvit', 72, r'--netG resvit needs --crop_size to be a multiple of 16'),
    ('swin_unet', 96, r'--netG swin_unet needs --crop_size to be a multiple of 64 \(4x4 patches.*windows of 2'),
    ('tcgan', 128, r'--netG tcgan needs --crop_size to be a multiple of 256'),
])
def test_sizes_the_architecture_cannot_take_are_refused(name, size, message):
    with pytest.raises(ValueError, match=message):
        build(name, 3, 3, '--crop_size', str(size))


@pytest.mark.parametrize('name', ['transunet', 'swin_unet', 'resvit', 'tcgan'])
def test_transformer_generators_refuse_another_input_size(name):
    net = build(name)
    size = TINY[name][0]
    with pytest.raises(ValueError, match=rf'--netG {name} was built for {size}x{size} images \(--crop_size {size}\); '
                                         rf'got {size // 2}x{size // 2}'):
        net(torch.zeros(1, 3, size // 2, size // 2))
    with pytest.raises(ValueError, match='expects input_nc=3 channels, got 1'):
        net(torch.zeros(1, 1, size, size))


def test_other_sizes_where_the_architecture_allows():
    assert build('transunet', 3, 3, '--crop_size', '96')(torch.zeros(1, 3, 96, 96)).shape == (1, 3, 96, 96)
    assert build('swin_unet', 1, 1, '--crop_size', '128')(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 128, 128)
    cnn = build('res_cnn')
    assert cnn(torch.zeros(1, 3, 36, 44)).shape == (1, 3, 36, 44)
    ppt = build('ppt')
    assert ppt(torch.zeros(1, 3, 48, 80)).shape == (1, 3, 48, 80)
    with pytest.raises(ValueError, match=r'--netG ppt needs height and width that are multiples of 16; got 40x40'):
        ppt(torch.zeros(1, 3, 40, 40))


def test_full_size_parameter_counts():
    """The published architectures at 256x256 (built on the meta device: no memory, no init cost)."""
    with torch.device('meta'):
        counts = {n: count_parameters(networks.define_G(3, 3, 64, n, opt=None)) for n in NAMES}
    assert counts == FULL_COUNTS
    # the papers' own figures: TransUNet 105.3 M (with a 9-class head), Swin-Unet 27.2 M, ResViT 123.4 M
    assert counts['transunet'] / 1e6 == pytest.approx(105.3, abs=0.1)
    assert counts['swin_unet'] / 1e6 == pytest.approx(27.2, abs=0.1)
    assert counts['resvit'] / 1e6 == pytest.approx(123.4, abs=0.1)


# ----------------------------------------------------------------------------- official weight files

@pytest.fixture(scope='module')
def vit_npz(tmp_path_factory):
    """(path, reference model) of a random R50+ViT hybrid written as the official JAX .npz."""
    ref = reference_hybrid()
    path = tmp_path_factory.mktemp('vit') / 'R50+ViT-B_16.npz'
    save_official_npz(ref, path)
    return path, ref


def test_transunet_reads_the_official_npz(vit_npz):
    path, ref = vit_npz
    random_net = build('transunet', seed=1)
    net = build('transunet', 3, 3, '--pretrained_vit', str(path), seed=1)
    loaded, expected = net.vit.state_dict(), ref.state_dict()
    for key, value in loaded.items():
        if key == 'pos_embed':   # 14x14 grid (class token dropped) resized to 4x4 for 64x64 input
            assert value.shape == (1, 16, TINY_VIT.embed_dim)
            corner = expected['pos_embed'][0, 1]
            assert not torch.equal(value, random_net.vit.pos_embed) and value[0, 0].sub(corner).abs().max() < 1
        else:
            assert torch.equal(value, expected[key]), key
    assert 'cls_token' not in loaded
    x = images('transunet')
    net.eval(), random_net.eval()
    with torch.no_grad():
        assert not torch.allclose(net(x), random_net(x))


def test_transunet_one_channel_sums_the_rgb_stem(vit_npz):
    path, ref = vit_npz
    net = build('transunet', 1, 1, '--pretrained_vit', str(path))
    stem = net.vit.patch_embed.backbone.stem.conv.weight
    assert torch.allclose(stem, ref.patch_embed.backbone.stem.conv.weight.sum(1, keepdim=True))


def test_resvit_reads_the_official_npz(vit_npz):
    path, ref = vit_npz
    net = build('resvit', 3, 3, '--pretrained_vit', str(path))
    for key, value in net.transformer.state_dict().items():
        assert torch.equal(value, ref.state_dict()[key]), key
    for i in (0, 5):
        assert torch.equal(net.art[i].patch_embed.weight, ref.patch_embed.proj.weight)
        assert net.art[i].pos_embed.shape == (1, 16, TINY_VIT.embed_dim) and net.art[i].pos_embed.abs().sum() > 0
    # the shared transformer is one module: one set of parameters
    assert count_parameters(net) == sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())


def test_swin_unet_reads_the_official_pth(tmp_path):
    ref = reference_swin()
    path = tmp_path / 'swin_tiny_patch4_window7_224.pth'
    save_official_swin(ref, path)
    random_net = build('swin_unet', seed=1)
    net = build('swin_unet', 3, 3, '--pretrained_swin', str(path), seed=1)
    expected = ref.state_dict()
    for key, value in net.encoder.state_dict().items():
        if key.endswith('relative_position_bias_table'):       # window 7 (13 x 13 offsets) -> window 2 (3 x 3)
            assert value.shape == (9, expected[key].shape[1])
            assert not torch.equal(value, random_net.encoder.state_dict()[key])
        else:
            assert torch.equal(value, expected[key]), key
    # the patch merging that the official file keeps at the end of stage 0 is timm's start of stage 1
    assert torch.equal(net.encoder.layers[1].downsample.reduction.weight, ref.layers[1].downsample.reduction.weight)
    # decoder blocks start from the mirrored encoder stage (decoder stage j <- encoder stage 3 - j)
    for j, stage in enumerate(net.up_stages, start=1):
        for block, source in zip(stage.blocks, net.encoder.layers[3 - j].blocks):
            assert torch.equal(block.attn.qkv.weight, source.attn.qkv.weight)
    x = images('swin_unet')
    with torch.no_grad():
        assert not torch.allclose(net.eval()(x), random_net.eval()(x))


@pytest.mark.parametrize('flag, name', [('--pretrained_vit', 'transunet'), ('--pretrained_vit', 'resvit'),
                                        ('--pretrained_swin', 'swin_unet')])
def test_missing_weight_file_is_named(flag, name, tmp_path):
    path = tmp_path / 'nowhere.bin'
    with pytest.raises(FileNotFoundError, match=rf'{flag} {path}: no such file \(expected the official'):
        build(name, 3, 3, flag, str(path))


def test_bad_npz_files_are_clear_errors(vit_npz, tmp_path):
    path, _ = vit_npz
    text = tmp_path / 'notes.npz'
    text.write_text('not an archive')
    truncated = tmp_path / 'truncated.npz'
    truncated.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with np.load(path) as w:
        arrays = dict(w)
    del arrays['Transformer/encoder_norm/scale']
    lacking = tmp_path / 'lacking.npz'
    np.savez(lacking, **arrays)
    deeper = tmp_path / 'deeper.npz'
    save_official_npz(reference_hybrid(HybridConfig(32, 3, 2, (1, 1, 1), 32)), deeper)
    for bad, message in ((text, 'not a readable R50\\+ViT-B_16.npz'), (truncated, 'cannot be read|not a readable'),
                         (lacking, r'not the official R50\+ViT-B_16.npz: it lacks an array '
                                   r'\(Transformer/encoder_norm/scale'),
                         (deeper, r'holds a hybrid with 3 transformer blocks and ResNet units \(1, 1, 1\); this '
                                  r'generator has 2 blocks')):
        with pytest.raises(ValueError, match=rf'--pretrained_vit {bad}: ({message})'):
            build('transunet', 3, 3, '--pretrained_vit', str(bad))


def test_bad_swin_files_are_clear_errors(tmp_path):
    no_model = tmp_path / 'state_only.pth'
    torch.save(reference_swin().state_dict(), no_model)
    good = tmp_path / 'good.pth'
    save_official_swin(reference_swin(), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:2000])
    deeper = tmp_path / 'deeper.pth'
    save_official_swin(reference_swin(depths=(2, 2, 4, 2)), deeper)
    for bad, message in ((no_model, "no 'model' state dict; expected the official swin_tiny_patch4_window7_224.pth"),
                         (truncated, 'cannot be read as a PyTorch checkpoint'),
                         (deeper, r'holds a Swin with stage depths \(2, 2, 4, 2\); swin_unet has \(2, 2, 2, 2\)')):
        with pytest.raises(ValueError, match=rf'--pretrained_swin {bad}: {message}'):
            build('swin_unet', 3, 3, '--pretrained_swin', str(bad))


def test_random_initialisation_is_said_once(monkeypatch, capsys):
    monkeypatch.setattr(base, '_warned', set())
    build('transunet')
    build('transunet')
    build('res_cnn')
    build('swin_unet', 3, 3, '--pretrained_swin', 'nowhere.pth', isTrain=False)   # testing: weights come later
    err = capsys.readouterr().err
    assert err.count('WARNING') == 1
    assert ('no --pretrained_vit given: the R50+ViT-B/16 encoder of transunet is RANDOMLY INITIALISED, so results '
            'will not match the paper') in err and '--pretrained_vit R50+ViT-B_16.npz' in err


# ----------------------------------------------------------------------------- in the cGAN

def pix2pix_opt(tmp_path, name: str, *extra: str, train: bool = True) -> argparse.Namespace:
    size, flags = TINY[name]
    args = ['--model', 'pix2pix', '--netG', name, '--name', f'p2p_{name}', '--checkpoints_dir',
            str(tmp_path / 'checkpoints'), '--gpu_ids', '-1', '--crop_size', str(size), '--load_size', str(size),
            '--ndf', '8', *flags, *extra]
    if train:
        args += ['--batch_size', '2', '--display_id', '0', '--gan_mode', 'lsgan']
    return (TrainOptions() if train else TestOptions()).parse(args, setup_device=False)


def pix2pix_model(tmp_path, name: str, *extra: str, train: bool = True):
    torch.manual_seed(0)
    opt = pix2pix_opt(tmp_path, name, *extra, train=train)
    model = create_model(opt)
    model.setup(opt)
    return model


def pair(name: str, seed: int = 0) -> dict:
    """Two smooth random patterns A in [-0.9, 0.9] (3 channels) and their negatives B."""
    size = TINY[name][0]
    freq = torch.rand(2, 2, 1, 1, generator=torch.Generator().manual_seed(seed)) * 3 + 1
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing='ij')
    a = 0.9 * torch.sin(2 * torch.pi * freq[:, :1] * x) * torch.cos(2 * torch.pi * freq[:, 1:] * y)
    a = a.expand(2, 3, -1, -1)
    return {'A': a.contiguous(), 'B': -a.contiguous(), 'A_paths': ['a0', 'a1'], 'B_paths': ['b0', 'b1']}


@pytest.mark.parametrize('name', NAMES)
def test_pix2pix_trains_each_generator_and_lowers_l1(tmp_path, name):
    model = pix2pix_model(tmp_path, name, '--lr', '2e-3')
    assert type(model.netG) is find_generator(name)
    model.set_input(pair(name))
    l1 = []
    for _ in range(8):
        model.optimize_parameters()
        l1.append(model.get_current_losses()['G_L1'])
    assert min(l1[-3:]) < 0.9 * l1[0], l1   # GAN training is noisy: the best of the last three steps


@pytest.mark.parametrize('name', NAMES)
def test_save_and_load_give_identical_outputs(tmp_path, name):
    model = pix2pix_model(tmp_path, name)
    model.set_input(pair(name))
    model.optimize_parameters()
    model.save_networks('latest')
    torch.manual_seed(123)  # another initialisation, replaced by the checkpoint
    loaded = pix2pix_model(tmp_path, name, '--eval', train=False)
    for m in (model, loaded):
        m.eval()
        m.set_input(pair(name, seed=1))
        m.test()
    assert torch.equal(model.fake_B, loaded.fake_B)


def test_resvit_two_stage_recipe(tmp_path, vit_npz):
    """Stage 1 trains res_cnn; stage 2 starts resvit from its net_G.pth (and the ViT-B .npz) and trains on."""
    stage1 = pix2pix_model(tmp_path, 'res_cnn')
    stage1.set_input(pair('res_cnn'))
    stage1.optimize_parameters()
    stage1.save_networks('latest')
    cnn_file = tmp_path / 'checkpoints' / 'p2p_res_cnn' / 'latest_net_G.pth'
    stage2 = pix2pix_model(tmp_path, 'resvit', '--pretrained_G', str(cnn_file), '--pretrained_vit', str(vit_npz[0]))
    cnn, vit = stage1.netG.state_dict(), stage2.netG.state_dict()
    assert set(cnn) < set(vit)
    for key, value in cnn.items():
        assert torch.equal(vit[key], value), key
    assert torch.equal(stage2.netG.transformer.blocks[0].attn.qkv.weight, vit_npz[1].blocks[0].attn.qkv.weight)
    stage2.set_input(pair('resvit'))
    stage2.optimize_parameters()
    assert all(torch.isfinite(torch.tensor(v)) for v in stage2.get_current_losses().values())

    other = tmp_path / 'checkpoints' / 'p2p_ppt' / 'latest_net_G.pth'
    ppt = pix2pix_model(tmp_path, 'ppt')
    ppt.save_networks('latest')
    with pytest.raises(ValueError, match=rf'--pretrained_G {other}: not a res_cnn generator of this width \(it was '
                                         r'trained with --netG ppt --ngf 4\)'):
        pix2pix_model(tmp_path, 'resvit', '--pretrained_G', str(other))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        pix2pix_model(tmp_path, 'resvit', '--pretrained_G', str(tmp_path / 'none.pth'))
