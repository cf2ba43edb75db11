"""Tests for models/generators/sam_unet.py and models/encoders/sam_encoder.py: the MRNet generator, its parts, SAM
loading and checkpoint hooks."""
import hashlib
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT

from models.encoders import sam_encoder
from models.generators import sam_unet
from models.generators.sam_unet import SamAdapter, SamUNet, SoftClamp, define_sam_unet
from models.layers import resize_bilinear
from models.encoders.sam_encoder import SAM_ENCODERS, SamFeatureEncoder, sam_encoder_config
from sam_fixtures import (TINY_SAM, official_encoder_state, random_position_tables, save_official_checkpoint,
                          tiny_sam_options)

NGF = 4


def tiny_net(input_nc=3, output_nc=3, ngf=NGF, norm='instance', use_dropout=False, **opts) -> SamUNet:
    torch.manual_seed(0)
    return define_sam_unet(input_nc, output_nc, ngf, norm, use_dropout, 'normal', 0.02, tiny_sam_options(**opts))


def images(n=2, channels=3, side=256, seed=0) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(autouse=True)
def quiet_random_sam(monkeypatch):
    """The 'randomly initialised' warning is tested on its own; elsewhere it is noise."""
    monkeypatch.setattr(sam_encoder, '_random_sam_warned', True)


# ----------------------------------------------------------------------------- generator shapes

@pytest.mark.parametrize('input_nc, output_nc', [(3, 3), (1, 1)])
def test_output_shape_and_range(input_nc, output_nc):
    net = tiny_net(input_nc, output_nc)
    y = net(images(channels=input_nc))
    assert y.shape == (2, output_nc, 256, 256)
    assert y.abs().max() <= 1.0 and y.std() > 0


def test_each_stage_fuses_sam_feature_at_its_size():
    net = tiny_net()
    widths = [NGF, 2 * NGF, 4 * NGF] + [8 * NGF] * 5
    fused = []
    hooks = [stage.transform.register_forward_hook(lambda m, inp, out: fused.append(tuple(inp[0].shape)))
             for stage in net.encoder]
    stages = net.encode(images())
    for h in hooks:
        h.remove()
    for i, (width, e, cat) in enumerate(zip(widths, stages, fused)):
        side = 256 // 2 ** (i + 1)
        assert e.shape == (2, width, side, side)
        assert cat == (2, 2 * width, side, side)  # e_i (+) A_i(F): equal parts CNN and SAM
    assert net.sam(images()).shape == (2, 256, 4, 4)  # --sam_input_size 64 -> 64/16


def test_bottleneck_is_softclamped_without_norm():
    net = tiny_net()
    last = net.encoder[-1].transform
    assert isinstance(last[-1], SoftClamp) and last[-1].alpha == 0.001
    assert isinstance(last[1], nn.Identity)  # instance norm of a 1x1 map would be 0
    assert all(isinstance(stage.transform[1], nn.InstanceNorm2d) for stage in net.encoder[:-1])
    pre = []
    last[0].register_forward_hook(lambda m, inp, out: pre.append(out))
    e8 = net.encode(images())[-1]
    assert torch.equal(e8, SoftClamp()(pre[0]))


def test_decoder_dropout_in_the_three_classic_places():
    net = tiny_net(use_dropout=True)
    with_dropout = [any(isinstance(m, nn.Dropout) for m in up.modules()) for up in net.decoder.ups]
    assert with_dropout == [False, True, True, True, False, False, False]


def test_no_sam_is_the_same_unet_without_the_branch():
    net = tiny_net(no_sam=True)
    assert net.sam is None and all(stage.adapter is None for stage in net.encoder)
    assert [s.transform[0].in_channels for s in net.encoder] == [NGF, 2 * NGF, 4 * NGF] + [8 * NGF] * 5
    with_sam = tiny_net()
    assert net(images()).shape == (2, 3, 256, 256)
    sam_parts = sum(p.numel() for n, p in with_sam.named_parameters() if n.startswith('sam.') or '.adapter.' in n)
    sam_parts += sum(s.transform[0].weight.numel() // 2 for s in with_sam.encoder)  # the SAM half of T_i
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in with_sam.parameters()) - sam_parts


# ----------------------------------------------------------------------------- SoftClamp, adapter, masks

def test_softclamp_values_and_gradient():
    z = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5, 3.0], requires_grad=True)
    s = SoftClamp(0.001)(z)
    expected = torch.tensor([-0.002, -0.0005, 0.0, 0.3, 1.0, 1.0005, 1.002])
    assert torch.allclose(s, expected, atol=1e-7)
    s.sum().backward()
    inside = torch.tensor([False, False, False, True, False, False, False])
    outside = torch.tensor([True, True, False, False, False, True, True])
    assert torch.allclose(z.grad[inside], torch.ones(1))
    assert torch.allclose(z.grad[outside], torch.full((4,), 0.001))


@pytest.mark.parametrize('size', [(128, 128), (1, 1), (4, 4)])
def test_adapter_conv_and_resize_commute(size):
    """Pins the choice: conv-then-resize (prose) == resize-then-conv (eq. 2); we run the cheaper."""
    torch.manual_seed(0)
    adapter = SamAdapter(width=5, in_channels=7)
    feature = torch.randn(2, 7, 16, 16)
    out = adapter(feature, size)
    assert out.shape == (2, 5) + size
    assert torch.allclose(out, resize_bilinear(adapter.conv(feature), size), atol=1e-5)
    assert torch.allclose(out, adapter.conv(resize_bilinear(feature, size)), atol=1e-5)


def test_resize_to_one_pixel_averages_the_whole_map():
    feature = torch.zeros(1, 1, 16, 16)
    feature[..., 0, 0] = 256.0  # a corner the 4 centre pixels would miss
    assert resize_bilinear(feature, (1, 1)).item() > 0


def test_masks_are_applied_in_turn():
    net = tiny_net(n_masks=3)
    out = net(images(), return_all=True)
    assert len(out.steps) == 4 and len(out.masks) == 3
    prod = out.masks[0] * out.masks[1] * out.masks[2]
    assert torch.allclose(out.image, out.steps[0] * prod, atol=1e-6)
    for k, (psi, mask) in enumerate(zip(net.masks.psi, out.masks)):
        assert mask.shape == (2, 1, 256, 256) and 0 <= mask.min() and mask.max() <= 1
        assert torch.allclose(mask, torch.sigmoid(psi(out.steps[k])))  # M_k = sigmoid(psi_k(y_{k-1}))
        assert torch.allclose(out.steps[k + 1], out.steps[k] * mask)
    assert torch.equal(net(images()), out.image)


@pytest.mark.parametrize('bias', [3.0, 0.0])
def test_masks_start_near_sigmoid_of_their_initial_bias(bias):
    """Default +3: the masks start open (0.95) and air (-1) stays near -0.9, not at -0.25 as with bias 0."""
    net = tiny_net(n_masks=2, **({} if bias == 3.0 else {'mask_init_bias': bias}))
    assert [float(psi[-1].bias) for psi in net.masks.psi] == [bias, bias]
    x = images()
    out = net(x, return_all=True)
    start = torch.sigmoid(torch.tensor(bias))
    for mask in out.masks:
        assert (mask.mean() - start).abs() < 0.02 and (mask - start).abs().max() < 0.1
    air = -torch.ones(1, 3, 256, 256)
    steps, _ = net.masks(air)
    assert (steps[-1].mean() - (-start ** 2)).abs() < 0.05         # y_2 = y_0 M_1 M_2: -0.91 or -0.25


def test_zero_masks_output_decoder_image():
    net = tiny_net(n_masks=0)
    out = net(images(), return_all=True)
    assert out.masks == [] and len(out.steps) == 1 and torch.equal(out.image, out.steps[0])
    assert len(list(net.masks.parameters())) == 0


# ----------------------------------------------------------------------------- SAM input and weights

def test_input_mapping_to_sam_pixels():
    sam = SamFeatureEncoder(TINY_SAM, input_size=64, in_channels=1)
    gray = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 1, 64, 3).reshape(1, 1, 64, 3)
    gray = F.pad(gray, (0, 61), value=1.0)  # (1, 1, 64, 64)
    mapped = sam.preprocess(gray)
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    for col, pixel in ((0, 0.0), (1, 127.5), (2, 255.0)):
        assert torch.allclose(mapped[0, :, 10, col], (pixel - mean) / std, atol=1e-5)
    rgb = SamFeatureEncoder(TINY_SAM, input_size=128).preprocess(torch.zeros(2, 3, 256, 256))
    assert rgb.shape == (2, 3, 128, 128)
    assert torch.allclose(rgb[0, :, 5, 5], (127.5 - mean) / std, atol=1e-5)


def test_official_checkpoint_at_1024_loads_into_256_encoder_like_resizing_by_hand(tmp_path):
    state = official_encoder_state(TINY_SAM)
    path = tmp_path / 'sam_tiny.pth'
    save_official_checkpoint(path, state)
    sam = SamFeatureEncoder(TINY_SAM, input_size=256, checkpoint=str(path))
    assert sam.checkpoint_name == 'sam_tiny.pth'
    assert sam.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    # by hand: pos_embed resized bicubically; the 1024 rel-pos tables kept, so segment_anything
    # interpolates them itself at run time
    reference = ImageEncoderViT(img_size=256, embed_dim=32, depth=2, num_heads=2, use_rel_pos=True, window_size=14,
                                global_attn_indexes=(1,), norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6))
    hand = dict(state)
    hand['pos_embed'] = F.interpolate(state['pos_embed'].permute(0, 3, 1, 2), size=(16, 16), mode='bicubic',
                                      antialias=True).permute(0, 2, 3, 1)
    reference.blocks[1].attn.rel_pos_h = nn.Parameter(state['blocks.1.attn.rel_pos_h'])
    reference.blocks[1].attn.rel_pos_w = nn.Parameter(state['blocks.1.attn.rel_pos_w'])
    reference.load_state_dict(hand)
    assert sam.image_encoder.blocks[1].attn.rel_pos_h.shape == (31, 16)  # 2 * 256/16 - 1
    assert torch.equal(sam.image_encoder.blocks[0].attn.rel_pos_h, state['blocks.0.attn.rel_pos_h'])  # window

    x = images(1, 3, 256)
    with torch.no_grad():
        expected = reference(sam.preprocess(x))
    assert torch.allclose(sam(x), expected, atol=1e-4)


def test_real_vit_b_layout_loads_at_small_input(tmp_path):
    """The official vit_b file layout (whole SAM: image encoder, prompt encoder, mask decoder) at 1024."""
    full = sam_model_registry['vit_b']()
    random_position_tables(full.image_encoder)
    path = tmp_path / 'sam_vit_b_random.pth'
    torch.save(full.state_dict(), path)
    official = full.image_encoder.state_dict()
    del full

    opt = sam_unet.sam_options(None)  # vit_b, as on the command line
    opt.sam_checkpoint, opt.sam_input_size = str(path), 64
    net = define_sam_unet(3, 3, NGF, 'instance', False, 'normal', 0.02, opt)
    encoder = net.sam.image_encoder
    assert len(encoder.blocks) == 12 and encoder.patch_embed.proj.out_channels == 768
    assert torch.equal(encoder.blocks[3].mlp.lin1.weight, official['blocks.3.mlp.lin1.weight'])
    assert torch.allclose(encoder.pos_embed, F.interpolate(official['pos_embed'].permute(0, 3, 1, 2), size=(4, 4),
                                                           mode='bicubic', antialias=True).permute(0, 2, 3, 1))
    for i in range(12):
        rel = encoder.blocks[i].attn.rel_pos_h
        if i in (2, 5, 8, 11):  # global: 127 -> 2 * 4 - 1 rows, as segment_anything interpolates
            expected = F.interpolate(official[f'blocks.{i}.attn.rel_pos_h'].t()[None], size=7, mode='linear')[0].t()
            assert torch.allclose(rel, expected)
        else:
            assert torch.equal(rel, official[f'blocks.{i}.attn.rel_pos_h'])
    assert net.sam(images(1)).shape == (1, 256, 4, 4)


def test_random_sam_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    a = SamFeatureEncoder(TINY_SAM, input_size=64)
    after_a = torch.rand(3)
    torch.manual_seed(5)
    b = SamFeatureEncoder(TINY_SAM, input_size=64)
    assert torch.equal(torch.rand(3), after_a)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_random_sam_is_announced_once(monkeypatch, capsys):
    monkeypatch.setattr(sam_encoder, '_random_sam_warned', False)
    SamFeatureEncoder(TINY_SAM, input_size=64)
    assert 'RANDOMLY INITIALISED, so results will not match the paper' in capsys.readouterr().err
    SamFeatureEncoder(TINY_SAM, input_size=64)
    assert capsys.readouterr().err == ''


# ----------------------------------------------------------------------------- frozen / fine-tuned SAM

def test_frozen_sam_gets_no_gradient_even_when_asked():
    net = tiny_net()
    net.train()
    assert not net.sam.training and not net.sam.image_encoder.training and net.encoder.training
    net.sam.requires_grad_(True)  # e.g. a model calling set_requires_grad(netG, True)
    feature = net.sam(images())
    assert not feature.requires_grad and not feature.is_inference()
    net(images()).mean().backward()
    assert all(p.grad is None for p in net.sam.parameters())
    assert all(p.grad is not None for p in net.encoder.parameters())


def test_finetuned_sam_trains():
    net = tiny_net(sam_finetune=True)
    net.train()
    assert net.sam.training and all(p.requires_grad for p in net.sam.parameters())
    net(images()).mean().backward()
    assert net.sam.image_encoder.patch_embed.proj.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- checkpoint hooks

def test_checkpoint_leaves_frozen_sam_out_and_restores_outputs(tmp_path):
    path = tmp_path / 'sam_tiny.pth'
    save_official_checkpoint(path, official_encoder_state(TINY_SAM))
    net = tiny_net(sam_checkpoint=str(path))
    state = net.checkpoint_state()
    assert state and not any(k.startswith('sam.') for k in state)
    meta = net.checkpoint_meta()
    assert meta == {'no_sam': False, 'n_masks': 2, 'sam_model_type': 'vit_b', 'sam_checkpoint': 'sam_tiny.pth',
                    'sam_sha256': hashlib.sha256(path.read_bytes()).hexdigest(), 'sam_input_size': 64,
                    'sam_finetune': False, 'sam_precision': 'fp32'}
    torch.save({'state': state, 'meta': meta}, tmp_path / 'net.pth')
    saved = torch.load(tmp_path / 'net.pth', weights_only=True)

    torch.manual_seed(1)  # different init for the U-Net parts
    other = define_sam_unet(3, 3, NGF, 'instance', False, 'normal', 0.02, tiny_sam_options(sam_checkpoint=str(path)))
    x = images()
    net.eval(), other.eval()
    assert not torch.equal(net(x), other(x))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        other.load_checkpoint_state(saved['state'], saved['meta'])
    assert torch.equal(net(x), other(x))


def test_finetuned_sam_is_saved_and_loaded():
    net = tiny_net(sam_finetune=True)
    with torch.no_grad():
        net.sam.image_encoder.neck[0].weight.mul_(2)
    state = net.checkpoint_state()
    assert 'sam.image_encoder.neck.0.weight' in state
    frozen = tiny_net()  # a frozen run of the fine-tuned checkpoint uses the fine-tuned weights
    frozen.load_checkpoint_state(state, net.checkpoint_meta())
    assert torch.equal(frozen.sam.image_encoder.neck[0].weight, net.sam.image_encoder.neck[0].weight)
    net.eval()
    # SDPA picks another CPU kernel when gradients are needed: equal up to float rounding
    torch.testing.assert_close(net(images()), frozen(images()), atol=1e-5, rtol=0)


def test_load_warns_when_sam_file_differs(tmp_path):
    path = tmp_path / 'sam_tiny.pth'
    save_official_checkpoint(path, official_encoder_state(TINY_SAM))
    net = tiny_net(sam_checkpoint=str(path))
    meta = dict(net.checkpoint_meta(), sam_sha256='0' * 64, sam_checkpoint='sam_other.pth')
    with pytest.warns(UserWarning, match='trained with SAM weights sam_other.pth'):
        net.load_checkpoint_state(net.checkpoint_state(), meta)
    random_net = tiny_net()  # random SAM, checkpoint trained with a file
    with pytest.warns(UserWarning, match=r'this run uses \(random\)'):
        random_net.load_checkpoint_state(net.checkpoint_state(), net.checkpoint_meta())


def test_load_refuses_a_checkpoint_of_another_configuration():
    state = tiny_net(no_sam=True).checkpoint_state()
    with pytest.raises(RuntimeError, match='does not fit.*missing .*adapter'):
        tiny_net().load_checkpoint_state(state, {})


# ----------------------------------------------------------------------------- bad input

def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth: no such file'):
        tiny_net(sam_checkpoint=str(tmp_path / 'nope.pth'))


def test_unreadable_checkpoint(tmp_path):
    path = tmp_path / 'broken.pth'
    path.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match='broken.pth: cannot be read as a PyTorch checkpoint: the file .* is '
                                           'damaged'):
        tiny_net(sam_checkpoint=str(path))


def test_checkpoint_that_is_not_sam(tmp_path):
    path = tmp_path / 'latest_net_G.pth'
    torch.save({'model.0.weight': torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r'latest_net_G.pth is not a SAM checkpoint \(no image_encoder.\* keys\)'):
        tiny_net(sam_checkpoint=str(path))


def test_checkpoint_of_another_model_type(tmp_path):
    path = tmp_path / 'sam_vit_l.pth'
    fake_vit_l = {'image_encoder.patch_embed.proj.weight': torch.zeros(1024, 3, 16, 16)}
    fake_vit_l.update({f'image_encoder.blocks.{i}.norm1.weight': torch.zeros(1) for i in range(24)})
    torch.save(fake_vit_l, path)
    opt = sam_unet.sam_options(None)
    opt.sam_checkpoint, opt.sam_input_size = str(path), 32
    with pytest.raises(ValueError, match=r'sam_vit_l.pth holds a vit_l image encoder \(embed_dim 1024, 24 blocks\); '
                                         r'--sam_model_type vit_b expects embed_dim 768, 12 blocks'):
        define_sam_unet(3, 3, NGF, 'instance', False, 'normal', 0.02, opt)


@pytest.mark.parametrize('size', [100, 0, 8])
def test_sam_input_size_must_be_multiple_of_16(size):
    with pytest.raises(ValueError, match=f'--sam_input_size must be a positive multiple of 16.*got {size}'):
        tiny_net(sam_input_size=size)


@pytest.mark.parametrize('side', [128, 320])
def test_input_that_cannot_pass_8_stages(side):
    with pytest.raises(ValueError, match=f'multiples of 256 .*got {side}x{side}'):
        tiny_net(no_sam=True)(images(1, 3, side))


def test_other_bad_settings():
    with pytest.raises(ValueError, match='SAM reads a 1-channel image, 3 channels, or an odd number of 2.5D context '
                                         'channels .*--input_nc is 2'):
        tiny_net(input_nc=2)
    with pytest.raises(ValueError, match='--n_masks must be >= 0'):
        tiny_net(n_masks=-1)
    with pytest.raises(ValueError, match='expects input_nc=3 channels, got 1'):
        tiny_net()(images(1, 1))


def test_model_type_defaults_and_hidden_overrides():
    assert sam_encoder_config(sam_unet.sam_options(None)) is SAM_ENCODERS['vit_b']
    tiny = sam_encoder_config(tiny_sam_options())
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads, tiny.global_attn_indexes) == (32, 2, 2, (1,))
    opt = sam_unet.sam_options(None)
    opt.sam_model_type = 'vit_h'
    assert sam_encoder_config(opt).embed_dim == 1280 and sam_encoder_config(opt).depth == 32
