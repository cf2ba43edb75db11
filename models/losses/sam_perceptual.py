"""The SAM perceptual loss (``--lambda_sam_perceptual W``): W * mean |F(G(A)) - F(B)|, F the frozen SAM image
encoder's feature map (256, S/16, S/16), as the third SynthRAD2025 Task 1 entry used. Any generator gets it:
pix2pix builds a frozen encoder from the --sam_* flags, MRNet reuses its generator's frozen SAM (a separate frozen
copy when SAM is fine-tuned or absent). Gradients flow through the encoder into the generator; SAM's weights get
none. The target's F comes from the SAM feature cache like the input's (data/sam_cache.py), else it is computed
without gradients."""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from data.sam_cache import add_sam_cache_options
from models.encoders.sam_encoder import SamFeatureEncoder, add_sam_encoder_options, sam_encoder_config
from util.parser_flags import add_flag


def add_sam_perceptual_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--lambda_sam_perceptual, the SAM encoder's and the SAM cache's flags (adding twice is a no-op)."""
    add_flag(parser, '--lambda_sam_perceptual', type=float, default=0.0, metavar='W',
             help='weight of the SAM perceptual loss, mean |SAM(G(A)) - SAM(B)| on frozen SAM features (0: off, the '
                  'paper). Uses the --sam_* encoder flags')
    return add_sam_cache_options(add_sam_encoder_options(parser))


def perceptual_encoder(opt: argparse.Namespace, generator: nn.Module | None = None) -> SamFeatureEncoder:
    """The frozen encoder of the loss: the generator's own SAM when it has a frozen one, else a new frozen one from
    the --sam_* flags (1 or output_nc channels read as SAM does)."""
    sam = getattr(generator, 'sam', None)
    if isinstance(sam, SamFeatureEncoder) and not sam.finetune:
        return sam
    return SamFeatureEncoder(sam_encoder_config(opt), opt.sam_input_size, 3 if opt.output_nc != 1 else 1,
                             opt.sam_checkpoint, False, opt.sam_model_type, opt.sam_precision)


def sam_perceptual_loss(encoder: SamFeatureEncoder, fake: torch.Tensor,
                        target_feature: torch.Tensor) -> torch.Tensor:
    """mean |F(fake) - target_feature|: fake (N, C, H, W) in [-1, 1] with gradients, target_feature
    (N, 256, S/16, S/16) a constant."""
    return (encoder.differentiable(fake) - target_feature.to(fake.device, torch.float32)).abs().mean()
