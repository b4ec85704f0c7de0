"""KernelBench-format problem (written for this corpus): leaky_relu(A @ B, 0.01) in fp16, the
fused matmul of Triton's tutorial 03; sizes not multiples of the tutorial's tiles."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return torch.nn.functional.leaky_relu(torch.matmul(A, B), 0.01)


def get_inputs():
    return [torch.randn(160, 544).to(torch.float16), torch.randn(544, 200).to(torch.float16)]


def get_init_inputs():
    return []
