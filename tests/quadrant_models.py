"""Models whose class maps are known in closed form (CAM and localisation tests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrlt.models.build import CxrModel
from cxrlt.models.heads import Head, LinearHead
from cxrlt.models.pooling import AvgPool


QUADRANTS = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4)),
             (slice(4, 8), slice(4, 8))]  # top-left, top-right, bottom-left, bottom-right of an 8 x 8 grid


class QuadrantBackbone(nn.Module):
    """Feature map (B, 4, 8, 8): channel c = ReLU of the normalised brightness pooled to 8 x 8, inside quadrant c only.

    With a classifier w = identity, class k sees nothing but quadrant k: its
    logit is driven by that quadrant's brightness, its map is the quadrant's
    brightness pattern and zero elsewhere.
    """

    num_features = 4

    def __init__(self):
        super().__init__()
        masks = torch.zeros(4, 8, 8)
        for c, (rows, cols) in enumerate(QUADRANTS):
            masks[c, rows, cols] = 1.0
        self.register_buffer("masks", masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(F.adaptive_avg_pool2d(x[:, :1], 8))
        return pooled * self.masks[None]


def quadrant_model(scale: float = 2.0, bias: float = -1.0) -> CxrModel:
    head = LinearHead(4, 4, AvgPool())
    with torch.no_grad():
        head.fc.weight.copy_(scale * torch.eye(4))
        head.fc.bias.fill_(bias)
    return CxrModel(QuadrantBackbone(), head, in_chans=1).eval()


class SquaredMeanHead(Head):
    """logit_k = (spatial mean of channel k)^2: not linear, so no CAM; its Grad-CAM is known in closed form.

    d logit_k / d A_k(i, j) = 2 m_k / (h w) at every position (m_k the mean),
    so Grad-CAM_k = ReLU(2 m_k / (h w) * A_k).
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3)) ** 2
