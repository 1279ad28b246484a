"""A BERT-style encoder block (fused QKV, SDPA, GELU FFN, post-LayerNorm): the shape the runtime
is tuned and benchmarked on (`benchmarks/gpu_sparse_runtime.py`) and tested with."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

__all__ = ["EncoderBlock"]


class EncoderBlock(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4, ff: int = 128) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.f1, self.act, self.f2 = nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = self.n1(x + self.o(a))
        return self.n2(x + self.f2(self.act(self.f1(x))))
