"""KernelBench-format problem (written for this corpus): GEGLU with the tanh form of GELU,
gelu_tanh(a) * b, on fp16 rows (Liger's LigerGELUMulFunction forward)."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        return torch.nn.functional.gelu(a, approximate="tanh") * b


def get_inputs():
    return [torch.randn(6, 1531).to(torch.float16), torch.randn(6, 1531).to(torch.float16)]


def get_init_inputs():
    return []
