"""Helpers for the baseline-generator tests: tiny configurations, and randomly initialised weight files in the
official layouts (the JAX ``R50+ViT-B_16.npz`` key names, Swin-T's ``.pth`` with its 'model' key)."""
from __future__ import annotations

import argparse

import numpy as np
import torch
from timm.models.swin_transformer import SwinTransformer

from models.generators import find_generator
from models.encoders.r50_vit import HybridConfig, build_hybrid_vit

TINY_VIT = HybridConfig(embed_dim=32, depth=2, num_heads=2, r50_layers=(1, 1, 1), r50_width=32)
VIT_FLAGS = ['--vit_dim', '32', '--vit_depth', '2', '--vit_heads', '2', '--r50_layers', '1,1,1', '--r50_width', '32']
SWIN_TINY = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
SWIN_FLAGS = ['--swin_window', '2', '--swin_embed_dim', '12', '--swin_depths', '2,2,2,2', '--swin_heads', '1,2,2,4']
# name -> (image side, flags) of a generator that runs in a fraction of a second on a CPU
TINY = {
    'transunet': (64, VIT_FLAGS),
    'swin_unet': (64, SWIN_FLAGS),
    'resvit': (64, ['--ngf', '4', *VIT_FLAGS]),
    'res_cnn': (64, ['--ngf', '4']),
    'tcgan': (256, ['--ngf', '4', '--tcgan_dim', '64', '--tcgan_depths', '1,1,1']),
    'ppt': (64, ['--ngf', '4']),
}


def tiny_options(name: str, *extra: str) -> argparse.Namespace:
    """Options of generator ``name`` (its own flags only, plus crop_size) for its tiny configuration."""
    size, flags = TINY[name]
    parser = find_generator(name).modify_commandline_options(argparse.ArgumentParser())
    parser.add_argument('--crop_size', type=int, default=size)
    parser.add_argument('--ngf', type=int, default=64)
    return parser.parse_args([*flags, *extra])


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter of ``module`` replaced by N(0, 0.1) noise (so a weight that is not loaded shows)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def reference_hybrid(config: HybridConfig = TINY_VIT, seed: int = 0) -> torch.nn.Module:
    """A random timm R50+ViT hybrid as the official checkpoint has it: 224x224 input, class token."""
    vit = build_hybrid_vit(config, 224, 3, class_token=True)
    randomize(vit, seed)
    return vit


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _hwio(w: torch.Tensor) -> np.ndarray:
    return w.detach().permute(2, 3, 1, 0).numpy()  # OIHW -> HWIO (JAX)


def save_official_npz(vit: torch.nn.Module, path) -> None:
    """Write ``vit`` (a timm hybrid with class token) with the key names and layouts of the JAX
    ``R50+ViT-B_16.npz``: HWIO kernels, (in, heads, head_dim) attention kernels, plus a 21k-class head."""
    w: dict[str, np.ndarray] = {}
    backbone = vit.patch_embed.backbone
    w['conv_root/kernel'] = _hwio(backbone.stem.conv.weight)
    w['gn_root/scale'], w['gn_root/bias'] = _np(backbone.stem.norm.weight), _np(backbone.stem.norm.bias)
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage.blocks):
            prefix = f'block{i + 1}/unit{j + 1}/'
            for r in (1, 2, 3):
                w[f'{prefix}conv{r}/kernel'] = _hwio(getattr(block, f'conv{r}').weight)
                norm = getattr(block, f'norm{r}')
                w[f'{prefix}gn{r}/scale'], w[f'{prefix}gn{r}/bias'] = _np(norm.weight), _np(norm.bias)
            if block.downsample is not None:
                w[f'{prefix}conv_proj/kernel'] = _hwio(block.downsample.conv.weight)
                w[f'{prefix}gn_proj/scale'] = _np(block.downsample.norm.weight)
                w[f'{prefix}gn_proj/bias'] = _np(block.downsample.norm.bias)
    w['embedding/kernel'] = _hwio(vit.patch_embed.proj.weight)
    w['embedding/bias'] = _np(vit.patch_embed.proj.bias)
    w['cls'] = _np(vit.cls_token)
    w['Transformer/posembed_input/pos_embedding'] = _np(vit.pos_embed)
    w['Transformer/encoder_norm/scale'], w['Transformer/encoder_norm/bias'] = _np(vit.norm.weight), _np(vit.norm.bias)
    dim = vit.embed_dim
    heads = vit.blocks[0].attn.num_heads
    for i, block in enumerate(vit.blocks):
        prefix = f'Transformer/encoderblock_{i}/'
        for k, norm in ((0, block.norm1), (2, block.norm2)):
            w[prefix + f'LayerNorm_{k}/scale'], w[prefix + f'LayerNorm_{k}/bias'] = _np(norm.weight), _np(norm.bias)
        qkv_w, qkv_b = block.attn.qkv.weight.detach(), block.attn.qkv.bias.detach()
        for k, name in enumerate(('query', 'key', 'value')):
            part = qkv_w[k * dim:(k + 1) * dim]                              # (out, in)
            attn = prefix + f'MultiHeadDotProductAttention_1/{name}/'
            w[attn + 'kernel'] = part.T.reshape(dim, heads, -1).numpy()
            w[attn + 'bias'] = qkv_b[k * dim:(k + 1) * dim].reshape(heads, -1).numpy()
        proj = block.attn.proj.weight.detach()                               # (out, in = heads * head_dim)
        w[prefix + 'MultiHeadDotProductAttention_1/out/kernel'] = _np(proj.reshape(dim, heads, -1).permute(1, 2, 0))
        w[prefix + 'MultiHeadDotProductAttention_1/out/bias'] = _np(block.attn.proj.bias)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            w[prefix + f'MlpBlock_3/Dense_{r}/kernel'] = fc.weight.detach().T.numpy()
            w[prefix + f'MlpBlock_3/Dense_{r}/bias'] = _np(fc.bias)
    w['head/kernel'] = np.zeros((dim, 21843), np.float32)
    w['head/bias'] = np.zeros(21843, np.float32)
    with open(path, 'wb') as f:
        np.savez(f, **w)


def reference_swin(depths=SWIN_TINY['depths'], seed: int = 0) -> SwinTransformer:
    """A random Swin-T-shaped timm model as the official file has it: 224x224, window 7, a 1000-class head."""
    swin = SwinTransformer(img_size=224, patch_size=4, embed_dim=SWIN_TINY['embed_dim'], depths=depths,
                           num_heads=SWIN_TINY['num_heads'], window_size=7, num_classes=1000)
    randomize(swin, seed)
    return swin


def save_official_swin(swin: SwinTransformer, path) -> None:
    """Write ``swin`` as swin_tiny_patch4_window7_224.pth is laid out: {'model': state} with each patch merging
    at the end of the stage before (``layers.i.downsample``), ``head.weight``, and the relative-position
    index buffers."""
    state = {}
    for key, value in swin.state_dict().items():
        parts = key.split('.')
        if parts[0] == 'layers' and parts[2] == 'downsample':
            key = '.'.join(['layers', str(int(parts[1]) - 1), *parts[2:]])
        state[key.replace('head.fc.', 'head.')] = value.clone()
    for name, module in swin.named_modules():
        if hasattr(module, 'relative_position_index'):
            state[name + '.relative_position_index'] = module.relative_position_index.clone()
    torch.save({'model': state}, path)
