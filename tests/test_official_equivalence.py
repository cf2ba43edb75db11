"""The baselines compute what their official code computes: the same weights in, the same output out (fp32).

The references below are written here from the official repositories' structure (TransUNet:
github.com/Beckschen/TransUNet networks/vit_seg_modeling*.py; ResViT: github.com/icon-lab/ResViT
models/residual_transformers.py and transformer_configs.py; Swin-Unet: github.com/HuCaoFighting/Swin-Unet
configs/swin_tiny_patch4_window7_224_lite.yaml; TCGAN: github.com/jinxiqinghuan/TCGAN models/transGANv4.py),
in plain torch.nn.functional, reading only the parameters of our networks, at tiny sizes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from generator_fixtures import TINY_VIT, randomize, reference_hybrid, save_official_npz, tiny_options
from models import networks
from models.generators import base


@pytest.fixture(autouse=True)
def quiet_random_init(monkeypatch):
    monkeypatch.setattr(base, '_warned', {'R50+ViT-B/16 encoder of transunet', 'Swin-T encoder of swin_unet',
                                          'ViT-B transformer of resvit'})


def build(name: str, *extra: str, seed: int = 0, init_type: str = 'normal') -> nn.Module:
    torch.manual_seed(seed)
    opt = tiny_options(name, *extra)
    opt.isTrain = True
    return networks.define_G(3, 3, opt.ngf, name, 'batch', True, init_type, 0.02, opt=opt)


# ----------------------------------------------------------------------------- the official TransUNet, by hand

def std_conv(x, weight, stride, padding):
    """The official StdConv2d: weights standardised per output channel (biased variance, eps 1e-5)."""
    var, mean = torch.var_mean(weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
    return F.conv2d(x, (weight - mean) / torch.sqrt(var + 1e-5), None, stride, padding)


def group_norm(x, norm, groups, eps):
    return F.group_norm(x, groups, norm.weight, norm.bias, eps)


def official_unit(x, unit, stride):
    """PreActBottleneck.forward of the official code (which, despite its name, normalises after each conv):
    GroupNorm(32, eps 1e-6) after conv1/conv2/conv3, the stride on the 3x3 conv (padding 1), the projection
    shortcut normalised by nn.GroupNorm(cout, cout) (eps 1e-5)."""
    residual = x
    if unit.downsample is not None:
        proj = unit.downsample.conv.weight
        residual = group_norm(std_conv(x, proj, stride, 0), unit.downsample.norm, proj.shape[0], 1e-5)
    y = F.relu(group_norm(std_conv(x, unit.conv1.weight, 1, 0), unit.norm1, 32, 1e-6))
    y = F.relu(group_norm(std_conv(y, unit.conv2.weight, stride, 1), unit.norm2, 32, 1e-6))
    y = group_norm(std_conv(y, unit.conv3.weight, 1, 0), unit.norm3, 32, 1e-6)
    return F.relu(residual + y)


def official_resnet(x, backbone, size):
    """The official ResNetV2.forward: root (7x7 stride 2, padding 3), max-pool 3/2 without padding, then the
    blocks; a block output smaller than size/4/(i+1) is zero-padded at its end for the skip only."""
    root = F.relu(group_norm(std_conv(x, backbone.stem.conv.weight, 2, 3), backbone.stem.norm, 32, 1e-6))
    features = [root]
    y = F.max_pool2d(root, 3, 2, 0)
    for i, stage in enumerate(backbone.stages):
        for j, unit in enumerate(stage.blocks):
            y = official_unit(y, unit, 2 if (i > 0 and j == 0) else 1)
        if i < len(backbone.stages) - 1:
            right = size // 4 // (i + 1)
            feat = torch.zeros(y.shape[0], y.shape[1], right, right)
            feat[:, :, :y.shape[2], :y.shape[3]] = y
            features.append(feat)
    return y, features[::-1]


def official_transformer(tokens, blocks, final_norm, heads):
    """The official Encoder: per block x + attn(LN(x)), x + MLP(LN(x)) (LayerNorm eps 1e-6, exact GELU), separate
    query/key/value projections (here the three thirds of the fused weight), softmax(q k^T / sqrt(d)) v."""
    x = tokens
    for blk in blocks:
        h = x
        x = F.layer_norm(x, x.shape[-1:], blk.norm1.weight, blk.norm1.bias, 1e-6)
        wq, wk, wv = blk.attn.qkv.weight.chunk(3)
        bq, bk, bv = blk.attn.qkv.bias.chunk(3)
        n, length, dim = x.shape

        def split(t):
            return t.reshape(n, length, heads, dim // heads).transpose(1, 2)
        q, k, v = split(F.linear(x, wq, bq)), split(F.linear(x, wk, bk)), split(F.linear(x, wv, bv))
        probs = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(n, length, dim)
        x = F.linear(context, blk.attn.proj.weight, blk.attn.proj.bias) + h
        h = x
        x = F.layer_norm(x, x.shape[-1:], blk.norm2.weight, blk.norm2.bias, 1e-6)
        x = F.linear(F.gelu(F.linear(x, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
        x = x + h
    return F.layer_norm(x, x.shape[-1:], final_norm.weight, final_norm.bias, 1e-6)


def conv_bn_relu(x, seq):
    conv, bn = seq[0], seq[1]
    y = F.conv2d(x, conv.weight, conv.bias, 1, 1)
    return F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def official_transunet(net, x):
    """The official VisionTransformer.forward (eval mode) with our head (3x3 conv + tanh) in place of its
    segmentation head; decoder blocks: UpsamplingBilinear2d(2) (corners aligned), concat skip, 2 x conv-BN-ReLU."""
    vit, size = net.vit, x.shape[-1]
    features, skips = official_resnet(x, vit.patch_embed.backbone, size)
    emb = F.conv2d(features, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias)
    tokens = emb.flatten(2).transpose(1, 2) + vit.pos_embed
    tokens = official_transformer(tokens, vit.blocks, vit.norm, TINY_VIT.num_heads)
    grid = size // 16
    y = conv_bn_relu(tokens.transpose(1, 2).reshape(x.shape[0], -1, grid, grid), net.conv_more)
    for block, skip in zip(net.blocks, [*skips, None]):
        y = F.interpolate(y, scale_factor=2, mode='bilinear', align_corners=True)
        if skip is not None:
            y = torch.cat([y, skip], 1)
        y = conv_bn_relu(conv_bn_relu(y, block.conv1), block.conv2)
    head = net.head[0]
    return torch.tanh(F.conv2d(y, head.weight, head.bias, 1, 1))


def randomize_batch_norm_statistics(net: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def test_transunet_computes_what_the_official_transunet_computes():
    """Random weights (every parameter N(0, 0.1), norm scales 1 + N(0, 0.1), BatchNorm statistics random, the head
    scaled down), a 64x64 input of amplitude 0.01 (so that the GroupNorm and weight-standardisation eps matter;
    stage-1 map 15x15, its skip padded to 16): our output equals the official computation within 1e-5."""
    net = build('transunet').eval()
    with torch.no_grad():
        randomize(net, 1)
        for m in net.modules():
            if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.add_(1.0)
        randomize_batch_norm_statistics(net, 2)
        net.head[0].weight.mul_(0.003)                  # the tanh in its linear range (pre-tanh values ~ 50 else)
        x = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.01
        ours, official = net(x), official_transunet(net, x)
    assert official.std() > 0.05 and official.abs().max() < 1                  # a non-trivial output
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-5)


def dropout_free_copy_is_deterministic(transformer: nn.Module, tokens: torch.Tensor, drops: list[nn.Dropout]):
    """With the dropouts the official config sets to 0.1 (listed in ``drops``) switched off, a transformer in
    training mode must give its eval-mode output: no other dropout (the attention projection's) may act."""
    for d in drops:
        d.p = 0.0
    with torch.no_grad():
        transformer.eval()
        expected = transformer(tokens)
        transformer.train()
        torch.manual_seed(0)
        got = transformer(tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_transunet_dropout_is_only_on_the_embeddings_and_mlps():
    net = build('transunet')
    vit = net.vit
    mlp_drops = [d for blk in vit.blocks for d in (blk.mlp.drop1, blk.mlp.drop2)]
    assert vit.pos_drop.p == 0.1 and all(d.p == 0.1 for d in mlp_drops)      # dropout_rate 0.1
    tokens = torch.randn(2, 16, TINY_VIT.embed_dim, generator=torch.Generator().manual_seed(0))
    dropout_free_copy_is_deterministic(vit.blocks, tokens, mlp_drops)


def test_resvit_dropout_is_only_in_the_mlps_and_init_is_pytorchs():
    """ResViT's transformer: dropout_rate 0.1 in the MLPs, attention_dropout_rate 0 (projection too). Its
    generator is not re-initialised by the official define_G: BatchNorm scales stay 1 whatever --init_type, convs
    keep PyTorch's Kaiming-uniform bound 1/sqrt(fan_in), the MLP weights are Xavier-uniform, their biases ~1e-6."""
    net = build('resvit', init_type='normal')
    blocks = net.transformer.blocks
    mlp_drops = [d for blk in blocks for d in (blk.mlp.drop1, blk.mlp.drop2)]
    assert all(d.p == 0.1 for d in mlp_drops)
    tokens = torch.randn(2, 16, TINY_VIT.embed_dim, generator=torch.Generator().manual_seed(0))
    dropout_free_copy_is_deterministic(blocks, tokens, mlp_drops)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            assert m.weight.abs().max() <= 1 / fan_in ** 0.5 + 1e-7
    fc1 = blocks[0].mlp.fc1
    bound = (6 / (fc1.in_features + fc1.out_features)) ** 0.5
    assert fc1.weight.abs().max() <= bound and fc1.weight.abs().max() > 0.9 * bound
    assert 0 < fc1.bias.abs().max() < 1e-5
    cnn = build('res_cnn', init_type='normal')
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in cnn.modules() if isinstance(m, nn.BatchNorm2d))


def test_tcgan_initialises_convolutions_only():
    """The official weights_init_normal touches classes named *Conv*: convolutions N(0, 0.02); the Linear layers
    keep PyTorch's default, uniform within 1/sqrt(fan_in) with non-zero biases."""
    net = build('tcgan', init_type='normal')
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert linears
    for m in linears:
        bound = 1 / m.in_features ** 0.5
        assert m.weight.abs().max() <= bound and m.weight.std() > 0.4 * bound
        assert m.bias is None or m.bias.abs().sum() > 0
    convs = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)])
    assert convs.std().item() == pytest.approx(0.02, rel=0.05)


def test_swin_unet_drop_path_rises_to_the_official_training_config():
    """Swin-Unet's training config sets DROP_PATH_RATE 0.2 (the encoder's last block; timm's linear rule)."""
    net = build('swin_unet')
    rates = [m.drop_prob for m in net.modules() if type(m).__name__ == 'DropPath']
    assert max(rates) == pytest.approx(0.2)


# ----------------------------------------------------------------------------- the official weight file

def test_position_embeddings_drop_the_class_token_not_the_last_cell(tmp_path):
    """At 224x224 the grid is the file's own 14x14: ResViT's position embeddings (read as TransUNet's are) must be the
    file's 196 grid cells exactly, its first entry (the class token's) left out, as the official load_from does
    (posemb[:, 1:])."""
    ref = reference_hybrid()
    path = tmp_path / 'R50+ViT-B_16.npz'
    save_official_npz(ref, path)
    with np.load(path) as w:
        posemb = torch.from_numpy(w['Transformer/posembed_input/pos_embedding'])
    assert posemb.shape == (1, 197, TINY_VIT.embed_dim)
    net = build('resvit', '--crop_size', '224', '--pretrained_vit', str(path))
    for i in (0, 5):
        torch.testing.assert_close(net.art[i].pos_embed.detach(), posemb[:, 1:], rtol=0, atol=0)
