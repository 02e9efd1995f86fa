"""Attention: batches past the CUDA grid limit are attended in chunks, with the same result."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from curate.train import attention
from curate.train.attention import CrossAttention


def test_batches_over_the_kernel_limit_are_chunked_with_the_same_result(monkeypatch):
    torch.manual_seed(0)
    for relative in (False, True):
        layer = CrossAttention(16, heads=2, dim_head=8, relative_position=relative, temporal_length=4).eval()
        x = torch.randn(37, 4, 16)  # 37 "latent positions" of 4 frames each
        whole = layer(x)
        calls = []
        sdpa = F.scaled_dot_product_attention

        def limited(q, k, v, **kwargs):  # what a kernel with a grid limit of 10 batch x heads would accept
            assert q.shape[0] * q.shape[1] <= 10, q.shape
            calls.append(q.shape[0])
            return sdpa(q, k, v, **kwargs)

        monkeypatch.setattr(attention.F, "scaled_dot_product_attention", limited)
        monkeypatch.setattr(attention, "MAX_KERNEL_BATCH", 10)
        chunked = layer(x)
        monkeypatch.undo()
        assert torch.allclose(whole, chunked, atol=1e-6)
        assert relative or calls == [5] * 7 + [2]
