"""MRNet's mask-module losses: feature discarding (eqs. 8-9) and mask sparsity (eq. 10).
"""
from __future__ import annotations

import torch


def feature_discard_loss(steps: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """L_feature = sum_k mean |y_{k-1} * (1 - M_k)| (eqs. 8-9); 0 without masks.

    steps: [y_0..y_n] (N, C, H, W); masks: [M_1..M_n] (N, 1, H, W) in [0, 1].
    Choice: eq. 9's y_i is read as the features mask i acts on, y_{i-1}, so each term is exactly
    what step i discards (y_{i-1} - y_i, "the corresponding discarded features" of eq. 8). The
    other reading, y_i * (1 - M_i) = y_{i-1} * M_i * (1 - M_i), vanishes at M_i = 0 as at M_i = 1
    and so would not penalise discarding at all. The norm is a mean (as nn.L1Loss), so the
    paper's lambdas weigh terms of the scale of the L1 pixel loss.
    """
    total = steps[0].new_zeros(())
    for y_prev, mask in zip(steps[:-1], masks):
        total = total + (y_prev * (1.0 - mask)).abs().mean()
    return total


def mask_sparsity_loss(masks: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """L_mask = sum_k mean |1 - M_k| (eq. 10): pushes every mask towards keeping everything; 0 without masks."""
    total = like.new_zeros(())
    for mask in masks:
        total = total + (1.0 - mask).abs().mean()
    return total
