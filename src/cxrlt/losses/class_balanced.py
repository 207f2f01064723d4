"""Class-balanced loss (Cui et al., CVPR 2019) on BCE or focal."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cxrlt.losses.base import (CONTEXT, MultiLabelLoss, effective_number_weights, log_probabilities, require_positives,
                               safe_pow)
from cxrlt.params import BelowOne, NonNegative
from cxrlt.registry import LOSSES


@LOSSES.register("class_balanced", context=CONTEXT)
class ClassBalancedLoss(MultiLabelLoss):
    """w_k [y (1-p)^g (-log p) + (1-y) p^g (-log(1-p))], w_k = C a_k / sum_j a_j (SPEC 1.7).

    a_k = (1 - beta) / (1 - beta^n_k) with n_k the training positives of
    class k, so the weights sum to C. `gamma=0` (default) is class-balanced
    BCE; `gamma > 0` is class-balanced focal as in Cui et al. (focal
    modulation without an alpha, the class weight playing its role).
    """

    name = "class_balanced"

    def __init__(
        self,
        beta: BelowOne = 0.9999,
        gamma: NonNegative = 0.0,
        **options: Any,
    ):
        super().__init__(**options)
        self.beta, self.gamma = float(beta), float(gamma)
        counts = self._require_counts()
        require_positives(self, counts.positives)
        self.weights = effective_number_weights(counts.positives, self.beta, 1.0)
        self._set_class_weight(self.weights)

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probabilities(x)
        positive = -safe_pow(torch.sigmoid(-x), self.gamma) * log_p
        negative = -safe_pow(torch.sigmoid(x), self.gamma) * log_q
        return y * positive + (1 - y) * negative

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [f"beta={self.beta}, gamma={self.gamma}", super().extra_repr()]))
