"""KernelBench-format problem used by the agent's tests: y = relu(x), elementwise.

Small on purpose: the CPU test lane runs Triton through its interpreter.
"""

import torch
import torch.nn as nn


class Model(nn.Module):
    """ReLU activation: y = max(x, 0)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


batch_size = 4
dim = 1000


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
