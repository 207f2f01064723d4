"""Asymmetric loss, ASL (Ridnik et al., ICCV 2021)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from cxrlt.losses.base import CONTEXT, MultiLabelLoss, clip_log, log_one_minus_shifted, safe_pow, shifted_probability
from cxrlt.params import BelowOne, NonNegative
from cxrlt.registry import LOSSES


@LOSSES.register("asl", context=CONTEXT)
class AsymmetricLoss(MultiLabelLoss):
    """L+ = -(1-p)^g+ log p, L- = -p_m^g- log(1 - p_m), p_m = max(p - m, 0) (SPEC 1.4).

    As in the authors' implementation, the arguments of both logs are
    clipped at `eps` (so a positive whose p < eps gets a constant loss
    -log eps and no gradient). Soft targets mix the two sides linearly:
    y L+ + (1-y) L-.
    """

    name = "asl"

    def __init__(
        self,
        gamma_pos: NonNegative = 0.0,
        gamma_neg: NonNegative = 4.0,
        margin: BelowOne = 0.05,
        eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-8,
        **options: Any,
    ):
        super().__init__(**options)
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.margin = float(margin)
        self.eps = float(eps)

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        positive = -safe_pow(torch.sigmoid(-x), self.gamma_pos) * clip_log(F.logsigmoid(x), self.eps)
        negative = -safe_pow(shifted_probability(x, self.margin), self.gamma_neg) * clip_log(
            log_one_minus_shifted(x, self.margin), self.eps
        )
        return y * positive + (1 - y) * negative

    def extra_repr(self) -> str:
        own = f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, margin={self.margin}, eps={self.eps}"
        return ", ".join(filter(None, [own, super().extra_repr()]))
