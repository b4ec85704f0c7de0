"""A Llama-style decoder layer assembled from the library's ops, for joules per token end to end.

    h   = x + Wo · attention(rope(Wq · rms_norm(x)), rope(Wk · rms_norm(x)), Wv · rms_norm(x), causal)
    out = h + Wdown · silu_mul(Wgate · rms_norm(h), Wup · rms_norm(h))

and, for a training-style step, ``cross_entropy(out · Wvocab, targets)``. ``ops`` is a namespace
with the eight op functions: ``library_ops()`` (kernelagent.kernels: the verified, tuned
kernels) or ``reference_ops()`` (each op's PyTorch reference), so the same layer runs either
way and ``benchmarks/bench_decoder.py`` compares them per token. Grouped-query attention
passes the ``kv_heads`` key/value heads to the attention op as they are (no repeat).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

OPS = ("rms_norm", "matmul", "rope", "attention", "silu_mul", "cross_entropy")


def library_ops() -> SimpleNamespace:
    import kernelagent.kernels as K

    return SimpleNamespace(**{name: getattr(K, name) for name in OPS})


def reference_ops() -> SimpleNamespace:
    from kernelagent.kernels import get_opspec

    return SimpleNamespace(**{name: get_opspec(name).reference for name in OPS})


@dataclass(frozen=True)
class LayerShape:
    hidden: int = 4096
    heads: int = 32
    kv_heads: int = 8
    ffn: int = 14336
    vocab: int = 128256

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SMALL = LayerShape(hidden=64, heads=4, kv_heads=2, ffn=96, vocab=128)   # for the CPU interpreter
LLAMA3_8B = LayerShape()


def make_weights(shape: LayerShape, *, dtype=torch.bfloat16, device="cpu", seed: int = 0) -> dict:
    g = torch.Generator(device="cpu").manual_seed(seed)

    def w(rows, cols):
        return (torch.randn(rows, cols, generator=g) / math.sqrt(rows)).to(dtype=dtype, device=device)

    d, kv = shape.hidden, shape.kv_heads * shape.head_dim
    return {"attn_norm": (1 + 0.1 * torch.randn(d, generator=g)).to(dtype=dtype, device=device),
            "ffn_norm": (1 + 0.1 * torch.randn(d, generator=g)).to(dtype=dtype, device=device),
            "wq": w(d, d), "wk": w(d, kv), "wv": w(d, kv), "wo": w(d, d),
            "w_gate": w(d, shape.ffn), "w_up": w(d, shape.ffn), "w_down": w(shape.ffn, d),
            "w_vocab": w(d, shape.vocab)}


def rope_tables(seq: int, head_dim: int, *, dtype, device, base: float = 500000.0):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().to(dtype=dtype, device=device), ang.sin().to(dtype=dtype, device=device)


def decoder_layer(ops, x: torch.Tensor, w: dict, shape: LayerShape, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """One layer on x (batch, seq, hidden)."""
    b, s, d = x.shape
    hd, nh, nkv = shape.head_dim, shape.heads, shape.kv_heads
    flat = x.reshape(b * s, d)
    n = ops.rms_norm(flat, w["attn_norm"])
    q = ops.matmul(n, w["wq"]).view(b, s, nh, hd).transpose(1, 2)
    k = ops.matmul(n, w["wk"]).view(b, s, nkv, hd).transpose(1, 2)
    v = ops.matmul(n, w["wv"]).view(b, s, nkv, hd).transpose(1, 2)
    q, k = ops.rope(q, cos, sin), ops.rope(k, cos, sin)
    a = ops.attention(q, k, v, True).transpose(1, 2).reshape(b * s, d)
    h = flat + ops.matmul(a, w["wo"])
    m = ops.rms_norm(h, w["ffn_norm"])
    f = ops.silu_mul(ops.matmul(m, w["w_gate"]), ops.matmul(m, w["w_up"]))
    return (h + ops.matmul(f, w["w_down"])).view(b, s, d)


def training_step_loss(ops, x, w, shape, cos, sin, targets) -> torch.Tensor:
    """The layer, the vocabulary projection and the cross-entropy loss (forward)."""
    out = decoder_layer(ops, x, w, shape, cos, sin)
    logits = ops.matmul(out.reshape(-1, shape.hidden), w["w_vocab"])
    return ops.cross_entropy(logits, targets.reshape(-1))
