"""A degenerate problem: the mean of a centred row is ~0 up to rounding noise (METR filter)."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return (x - x.mean(dim=-1, keepdim=True)).mean(dim=-1)


def get_inputs():
    return [torch.randn(8, 512)]


def get_init_inputs():
    return []
