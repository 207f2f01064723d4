"""The effective-number weighted focal loss of seed 001 (the weights themselves live in `cxrlt.losses.base`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from cxrlt.errors import ConfigError
from cxrlt.losses.base import (CONTEXT, MultiLabelLoss, class_labels, effective_number_weights, log_probabilities,
                               require_positives, safe_pow)
from cxrlt.params import BelowOne, NonNegative, Positive, Probability
from cxrlt.registry import LOSSES


@LOSSES.register("effective_number_focal", context=CONTEXT)
class EffectiveNumberFocalLoss(MultiLabelLoss):
    """Seed 001's focal loss with effective-number positive/negative weights (SPEC 1.6).

    L = -[w+_k a (1-p)^g y log p + w-_k a p^g (1-y) log(1-p)] with
    w+ = `effective_number_weights(positives, beta, scale)` and w- = 1 - w+.
    Note that a multiplies both sides (eq. 8 as written), unlike Lin's focal.
    Configurations where some w-_k <= 0 (tail weights above 1, e.g. the
    paper's literal s = 1) are refused, naming the classes.
    """

    name = "effective_number_focal"

    def __init__(
        self,
        beta: BelowOne = 0.9998,
        scale: Positive = 0.1,
        alpha: Probability = 0.5,
        gamma: NonNegative = 1.0,
        **options: Any,
    ):
        super().__init__(**options)
        self.beta, self.scale, self.alpha, self.gamma = float(beta), float(scale), float(alpha), float(gamma)
        counts = self._require_counts()
        require_positives(self, counts.positives)
        w_pos = effective_number_weights(counts.positives, self.beta, self.scale)
        w_neg = 1.0 - w_pos
        bad = np.flatnonzero(w_neg <= 0)
        if len(bad):
            detail = ", ".join(f"{class_labels([i], self.class_names)} (w+ = {w_pos[i]:.4g})" for i in bad)
            raise ConfigError(
                f"{self._label()}: with beta={self.beta} and scale={self.scale} the negative weight w- = 1 - w+ "
                f"is <= 0 for {detail}; lower `scale` (the authors use 0.1) or lower `beta` "
                "(which flattens every w+ towards `scale`)"
            )
        self.positive_weight, self.negative_weight = w_pos, w_neg

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probabilities(x)
        w_pos = self._constant("w_pos", self.positive_weight, x)
        w_neg = self._constant("w_neg", self.negative_weight, x)
        positive = -w_pos * self.alpha * safe_pow(torch.sigmoid(-x), self.gamma) * log_p
        negative = -w_neg * self.alpha * safe_pow(torch.sigmoid(x), self.gamma) * log_q
        return y * positive + (1 - y) * negative

    def extra_repr(self) -> str:
        own = f"beta={self.beta}, scale={self.scale}, alpha={self.alpha}, gamma={self.gamma}"
        return ", ".join(filter(None, [own, super().extra_repr()]))
