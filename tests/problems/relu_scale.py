"""KernelBench-format problem: y = relu(x) * weight, with a learned per-feature weight."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features))

    def forward(self, x):
        return torch.relu(x) * self.weight


def get_inputs():
    return [torch.randn(16, 96)]


def get_init_inputs():
    return [96]
