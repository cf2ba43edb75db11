"""Tests for models/mrnet_model.py: options, loss terms by hand, SAM frozen or fine-tuned through an optimiser
step, training on demo data, save/load, and the ablation flags."""
import argparse

import pytest
import torch

from data import create_dataset
from models import create_model
from models.mrnet_model import MrnetModel
from models.losses.mask_losses import feature_discard_loss, mask_sparsity_loss
from options.test_options import TestOptions
from options.train_options import TrainOptions
from data.demo_data import make_synthrad

TINY = ['--ngf', '4', '--ndf', '4', '--sam_input_size', '64', '--sam_embed_dim', '32', '--sam_depth', '2',
        '--sam_num_heads', '2', '--sam_global_attn_indexes', '1']


def mrnet_opt(tmp_path, *extra: str, train: bool = True) -> argparse.Namespace:
    """Options from the real parsers for a tiny MRNet on the CPU."""
    args = ['--model', 'mrnet', '--name', 'mrnet_tiny', '--checkpoints_dir', str(tmp_path / 'checkpoints'),
            '--gpu_ids', '-1', *TINY]
    if train:
        args += ['--batch_size', '2', '--display_id', '0']
    args += extra
    return (TrainOptions() if train else TestOptions()).parse(args, setup_device=False)


def batch(n=2, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, 256, 256, generator=gen) * 2 - 1
    return {'A': a, 'B': -a, 'A_paths': [f'a{i}' for i in range(n)], 'B_paths': [f'b{i}' for i in range(n)]}


def make_model(tmp_path, *extra: str) -> MrnetModel:
    torch.manual_seed(0)
    opt = mrnet_opt(tmp_path, *extra)
    model = create_model(opt)
    model.setup(opt)
    return model


@pytest.fixture(autouse=True)
def quiet_random_sam(monkeypatch):
    from models.encoders import sam_encoder
    monkeypatch.setattr(sam_encoder, '_random_sam_warned', True)


# ----------------------------------------------------------------------------- options and names

def test_paper_defaults():
    parser = TrainOptions().initialize(argparse.ArgumentParser())
    opt = MrnetModel.modify_commandline_options(parser, True).parse_args([])
    expected = dict(netG='sam_unet', netD='basic', norm='instance', gan_mode='lsgan', lr=1e-4, beta1=0.5,
                    batch_size=4, n_epochs=40, n_epochs_decay=0, seed=2024, dataset_mode='triplanar_aligned',
                    input_nc=3, output_nc=3, lambda_L1=100.0, lambda_feature=0.1, lambda_mask=0.05, n_masks=2,
                    sam_model_type='vit_b', sam_checkpoint=None, sam_input_size=1024, sam_finetune=False,
                    no_sam=False, no_dropout=True, pool_size=0)
    assert {k: getattr(opt, k) for k in expected} == expected


def test_loss_and_visual_names_include_masks(tmp_path):
    model = make_model(tmp_path, '--n_masks', '3')
    assert model.loss_names == ['G_GAN', 'G_L1', 'G_feature', 'G_mask', 'D_real', 'D_fake']
    assert model.visual_names == ['real_A', 'fake_B', 'real_B', 'mask_1', 'mask_2', 'mask_3']
    model.set_input(batch())
    model.test()
    visuals = model.get_current_visuals()
    assert list(visuals) == model.visual_names
    for k in range(3):
        mask = visuals[f'mask_{k + 1}']
        assert mask.shape == (2, 1, 256, 256) and mask.min() >= -1 and mask.max() <= 1
        assert torch.allclose(mask, model.masks[k] * 2 - 1)


def test_other_generators_are_refused(tmp_path):
    with pytest.raises(ValueError, match='--model mrnet needs --netG sam_unet'):
        create_model(mrnet_opt(tmp_path, '--netG', 'unet_256'))


# ----------------------------------------------------------------------------- loss terms by hand

def test_mask_losses_by_hand():
    y0 = torch.tensor([0.5, -1.0]).view(1, 1, 1, 2)
    m1 = torch.tensor([1.0, 0.5]).view(1, 1, 1, 2)
    m2 = torch.tensor([0.5, 0.0]).view(1, 1, 1, 2)
    y1, y2 = y0 * m1, y0 * m1 * m2  # [0.5, -0.5], [0.25, 0]
    # sum_k mean |y_{k-1} (1 - M_k)| = mean(0, 0.5) + mean(0.25, 0.5); reading y_k instead would give 0.1875
    assert feature_discard_loss([y0, y1, y2], [m1, m2]).item() == pytest.approx(0.625)
    assert mask_sparsity_loss([m1, m2], y0).item() == pytest.approx(0.25 + 0.75)
    assert feature_discard_loss([y0], []).item() == 0 and mask_sparsity_loss([], y0).item() == 0


def test_feature_loss_broadcasts_one_mask_over_channels():
    y0 = torch.tensor([[1.0, -2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # 2 channels
    m1 = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    assert feature_discard_loss([y0, y0 * m1], [m1]).item() == pytest.approx((1 + 0 + 3 + 0) / 4)


def test_generator_and_discriminator_losses_by_hand(tmp_path):
    model = make_model(tmp_path)
    model.set_input(batch())
    model.forward()
    loss = model.generator_loss()
    real_A, real_B, fake_B = model.real_A, model.real_B, model.fake_B
    with torch.no_grad():
        d_fake = model.netD(torch.cat([real_A, fake_B], 1))
        d_real = model.netD(torch.cat([real_A, real_B], 1))
    gan = ((d_fake - 1) ** 2).mean()                              # eq. 6, LSGAN
    l1 = 100 * (fake_B - real_B).abs().mean()                     # eq. 7
    steps, masks = model.mask_steps, model.masks
    feature = 0.1 * sum((steps[k] * (1 - masks[k])).abs().mean() for k in range(2))  # eq. 9
    sparsity = 0.05 * sum((1 - m).mean() for m in masks)          # eq. 10
    assert torch.allclose(model.loss_G_GAN, gan) and torch.allclose(model.loss_G_L1, l1)
    assert torch.allclose(model.loss_G_feature, feature) and torch.allclose(model.loss_G_mask, sparsity)
    assert torch.allclose(loss, gan + l1 + feature + sparsity)    # eq. 11
    model.backward_D()
    assert torch.allclose(model.loss_D_fake, (d_fake ** 2).mean())
    assert torch.allclose(model.loss_D_real, ((d_real - 1) ** 2).mean())


# ----------------------------------------------------------------------------- SAM through an optimiser step

def test_frozen_sam_is_untouched_by_a_training_step(tmp_path):
    model = make_model(tmp_path)
    sam = model.netG.sam
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    optimised = {id(p) for group in model.optimizer_G.param_groups for p in group['params']}
    assert not optimised & {id(p) for p in sam.parameters()}
    others = {k: v.clone() for k, v in model.netG.encoder.state_dict().items()}
    model.set_input(batch())
    model.optimize_parameters()
    assert not sam.training and all(p.grad is None for p in sam.parameters())
    assert all(torch.equal(v, before[k]) for k, v in sam.state_dict().items())
    assert any(not torch.equal(v, others[k]) for k, v in model.netG.encoder.state_dict().items())


def test_finetuned_sam_changes(tmp_path):
    model = make_model(tmp_path, '--sam_finetune')
    sam = model.netG.sam
    before = sam.image_encoder.patch_embed.proj.weight.clone()
    model.set_input(batch())
    model.optimize_parameters()
    assert sam.training and not torch.equal(sam.image_encoder.patch_embed.proj.weight, before)


# ----------------------------------------------------------------------------- training, saving, ablations

def test_training_on_demo_data_lowers_l1(tmp_path):
    root = tmp_path / 'demo'
    make_synthrad(str(root), 1, 2024)
    (root / 'splits').mkdir()
    (root / 'splits' / 'train.txt').write_text('demo001\n')
    model = make_model(tmp_path, '--dataroot', str(root), '--planes', 'z', '--lr', '3e-3', '--num_threads', '0',
                       '--batch_size', '1')
    data = next(iter(create_dataset(model.opt)))
    assert data['A'].shape == (1, 3, 256, 256)
    model.set_input(data)
    l1 = []
    for _ in range(10):
        model.optimize_parameters()
        l1.append(model.get_current_losses()['G_L1'])
    assert sum(l1[-3:]) < 0.95 * sum(l1[:3]), l1


def test_save_and_load_give_identical_outputs(tmp_path):
    model = make_model(tmp_path)
    model.set_input(batch())
    model.optimize_parameters()
    model.save_networks('latest')
    saved = torch.load(model.network_path('latest', 'G'), weights_only=True)
    assert not any(k.startswith('sam.') for k in saved['state_dict'])
    assert saved['meta']['sam_checkpoint'] is None and saved['meta']['sam_input_size'] == 64

    test_opt = mrnet_opt(tmp_path, train=False)
    torch.manual_seed(123)  # a different init, overwritten by the checkpoint
    loaded = create_model(test_opt)
    loaded.setup(test_opt)
    for m in (model, loaded):
        m.set_input(batch(seed=1))
        m.test()
    assert torch.equal(model.fake_B, loaded.fake_B)
    assert torch.equal(model.mask_2, loaded.mask_2)


@pytest.mark.parametrize('flags, masks', [(['--n_masks', '0'], 0), (['--no_sam'], 2),
                                          (['--lambda_feature', '0', '--lambda_mask', '0'], 2)])
def test_ablation_flags_train(tmp_path, flags, masks):
    model = make_model(tmp_path, *flags)
    model.set_input(batch())
    model.optimize_parameters()
    losses = model.get_current_losses()
    assert len(model.masks) == masks and all(torch.isfinite(torch.tensor(list(losses.values()))))
    assert (model.netG.sam is None) == ('--no_sam' in flags)
    if masks == 0 or '--lambda_mask' in flags:
        assert losses['G_feature'] == 0 and losses['G_mask'] == 0
    else:
        assert losses['G_feature'] > 0 and losses['G_mask'] > 0
