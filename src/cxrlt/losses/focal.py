"""Focal loss (Lin et al.) as in torchvision and Keras, with optional label smoothing."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cxrlt.losses.base import CONTEXT, MultiLabelLoss, log_probabilities, safe_pow
from cxrlt.params import NonNegative, Probability
from cxrlt.registry import LOSSES


@LOSSES.register("focal", context=CONTEXT)
class FocalLoss(MultiLabelLoss):
    """L+ = -a (1-p)^g log p, L- = -(1-a) p^g log(1-p) (SPEC 1.3).

    `alpha=None` drops the a / (1-a) balancing (the thesis' eq. 5 form).
    Soft targets y (label smoothing, MixUp) follow torchvision's
    `sigmoid_focal_loss` and Keras' `BinaryFocalCrossentropy` exactly:
    a_t (1 - p_t)^g BCE(y, p) with p_t = y p + (1-y)(1-p) and
    a_t = y a + (1-y)(1-a), so seed 003's recipe (a=0.25, g=2, Keras
    label smoothing 0.01, `apply_class_balancing=True`) means what it meant
    there (up to Keras' mean over classes, which is our sum divided by C).
    """

    name = "focal"

    def __init__(
        self,
        alpha: Probability | None = 0.25,
        gamma: NonNegative = 2.0,
        **options: Any,
    ):
        super().__init__(**options)
        self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probabilities(x)
        bce = -(y * log_p + (1 - y) * log_q)
        # 1 - p_t written without cancellation: y (1-p) + (1-y) p.
        miss = y * torch.sigmoid(-x) + (1 - y) * torch.sigmoid(x)
        loss = safe_pow(miss, self.gamma) * bce
        if self.alpha is not None:
            loss = (y * self.alpha + (1 - y) * (1 - self.alpha)) * loss
        return loss

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [f"alpha={self.alpha}, gamma={self.gamma}", super().extra_repr()]))
