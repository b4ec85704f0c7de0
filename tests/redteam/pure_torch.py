# target: softmax
# expect: no-kernel|pytorch-fallback
# examples: 4
# static: on
# taxonomy: S1 library fallback (no Triton at all)
import torch


def softmax(x, *, config=None):
    return torch.softmax(x, dim=-1)
