"""Global pooling of a feature map (B, C, H, W) -> (B, C)."""

from __future__ import annotations

import math

import torch
from torch import nn

from cxrlt.registry import POOLINGS


@POOLINGS.register("avg")
class AvgPool(nn.Module):
    """Mean over spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@POOLINGS.register("max")
class MaxPool(nn.Module):
    """Maximum over spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


@POOLINGS.register("lse")
class LSEPool(nn.Module):
    """Log-sum-exp pooling: 1/g * log(1/P * sum exp(g * x)) (seed 002, g = 0.5).

    Interpolates between average (g -> 0) and max (g -> inf) pooling;
    computed with logsumexp for stability.
    """

    def __init__(self, gamma: float = 0.5):
        super().__init__()
        if gamma <= 0:
            raise ValueError("lse pooling needs gamma > 0")
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = x.shape[2] * x.shape[3]
        flat = x.flatten(2) * self.gamma
        return (torch.logsumexp(flat, dim=2) - math.log(positions)) / self.gamma


@POOLINGS.register("gem")
class GeMPool(nn.Module):
    """Generalised mean pooling (mean of x^p)^(1/p), p learnable by default."""

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6):
        super().__init__()
        value = torch.tensor(float(p))
        self.p = nn.Parameter(value) if learnable else nn.Parameter(value, requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
