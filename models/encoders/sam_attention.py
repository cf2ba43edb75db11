"""Fused attention for segment_anything's ViT image encoder (issue 11).

segment_anything's ``Attention.forward`` builds the (B*heads, N, N) score matrix by hand, adds SAM's
decomposed relative-position terms to it, and runs softmax and the value product as separate kernels.
:class:`SdpaAttention` computes the same thing with one call of
``torch.nn.functional.scaled_dot_product_attention``: the relative-position terms become its additive
``attn_mask`` (the reading of pytorch-labs' segment-anything-fast), so on a GPU a fused kernel does
scores, softmax and values together (and bf16 inputs stay bf16).

For query position (h, w) and key position (h', w') of one head (q unscaled, d = head_dim):

    score = q . k / sqrt(d) + q . R_h[h - h'] + q . R_w[w - w']

where R_h, R_w are the (resized) ``rel_pos_h``/``rel_pos_w`` tables as segment_anything's
``get_rel_pos`` reads them. The class only replaces ``forward``: parameters, buffers and state-dict keys
are segment_anything's, so an official checkpoint loads unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """SAM's decomposed relative-position terms as an additive attention bias.

    q: (B, heads, H*W, d) unscaled queries; rel_pos_h (2H-1, d), rel_pos_w (2W-1, d).
    Returns (B, heads, H*W, H*W) with bias[.., (h, w), (h', w')] = q . R_h[h, h'] + q . R_w[w, w'].
    """
    height, width = size
    r_h = get_rel_pos(height, height, rel_pos_h).to(q.dtype)       # (H, H', d)
    r_w = get_rel_pos(width, width, rel_pos_w).to(q.dtype)         # (W, W', d)
    r_q = q.unflatten(2, (height, width))                          # (B, heads, H, W, d)
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, r_h)             # (B, heads, H, W, H')
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, r_w)             # (B, heads, H, W, W')
    bias = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)               # (B, heads, H, W, H', W')
    return bias.reshape(q.shape[0], q.shape[1], height * width, height * width)


class SdpaAttention(Attention):
    """segment_anything's multi-head attention with relative positions, through one fused SDPA call.

    (B, H, W, dim) -> (B, H, W, dim); equal to ``Attention.forward`` up to float rounding
    (tests/test_sam_cache.py checks 1e-5 in float32 on the CPU).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        # (3, B, heads, H*W, d)
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width)) if self.use_rel_pos \
            else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)


def use_sdpa_attention(encoder: nn.Module) -> nn.Module:
    """Switch every segment_anything ``Attention`` inside ``encoder`` to :class:`SdpaAttention`, in place.

    Only the class changes (same parameters, same state-dict keys); returns ``encoder``.
    """
    for module in encoder.modules():
        if type(module) is Attention:
            module.__class__ = SdpaAttention
    return encoder
