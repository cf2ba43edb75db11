"""Helpers for the MRNet tests: a tiny SAM ViT, options for it, and SAM checkpoints in the official layout."""
from __future__ import annotations

import argparse

import torch

from models.generators.sam_unet import sam_options
from models.encoders.sam_encoder import SAM_PRETRAIN_SIZE, SamEncoderConfig, build_image_encoder

# a ViT with SAM's layout (patch 16, window 14, rel-pos, neck to 256 channels) that runs in milliseconds
TINY_SAM = SamEncoderConfig('custom', embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,))


def tiny_sam_options(**overrides) -> argparse.Namespace:
    """sam_unet options for the tiny ViT at --sam_input_size 64, plus ``overrides``."""
    opt = sam_options(None)
    opt.sam_embed_dim, opt.sam_depth, opt.sam_num_heads = TINY_SAM.embed_dim, TINY_SAM.depth, TINY_SAM.num_heads
    opt.sam_global_attn_indexes = ','.join(str(i) for i in TINY_SAM.global_attn_indexes)
    opt.sam_input_size = 64
    for key, value in overrides.items():
        setattr(opt, key, value)
    return opt


def random_position_tables(encoder: torch.nn.Module, seed: int = 0) -> None:
    """Fill pos_embed and every rel_pos table with noise (segment_anything inits them to 0,
    which would hide a wrong resize)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name == 'pos_embed' or name.endswith(('rel_pos_h', 'rel_pos_w')):
                param.copy_(torch.randn(param.shape, generator=gen))


def official_encoder_state(config: SamEncoderConfig = TINY_SAM) -> dict[str, torch.Tensor]:
    """The image-encoder weights of a random SAM built for 1024 input, with random position tables."""
    encoder = build_image_encoder(config, SAM_PRETRAIN_SIZE)
    random_position_tables(encoder)
    return encoder.state_dict()


def save_official_checkpoint(path, encoder_state: dict[str, torch.Tensor]) -> None:
    """Write ``encoder_state`` as the official SAM file does: ``image_encoder.*`` keys beside the
    prompt encoder's and mask decoder's (here two stand-ins, which a loader must ignore)."""
    state = {'image_encoder.' + k: v for k, v in encoder_state.items()}
    state['prompt_encoder.pe_layer.positional_encoding_gaussian_matrix'] = torch.randn(2, 128)
    state['mask_decoder.iou_token.weight'] = torch.randn(1, 256)
    torch.save(state, path)
