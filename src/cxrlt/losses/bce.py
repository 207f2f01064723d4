"""Binary cross-entropy, plain and positive/negative-weighted (Wang et al., ChestX-ray8)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from cxrlt.errors import ConfigError
from cxrlt.losses.base import CONTEXT, MultiLabelLoss, class_labels, log_probabilities
from cxrlt.registry import LOSSES


@LOSSES.register("bce", context=CONTEXT)
class BCELoss(MultiLabelLoss):
    """-[y log p + (1 - y) log(1 - p)] per element (SPEC 1.1)."""

    name = "bce"

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probabilities(x)
        return -(y * log_p + (1 - y) * log_q)


@LOSSES.register("weighted_bce", context=CONTEXT)
class WeightedBCELoss(MultiLabelLoss):
    """BCE with w+ = (P+N)/P on positives and w- = (P+N)/N on negatives, per class (SPEC 1.2).

    P and N are the training split's positive and negative counts of the
    class; a class without positives or without negatives has no finite
    weight and is refused.
    """

    name = "weighted_bce"

    def __init__(self, **options: Any):
        super().__init__(**options)
        counts = self._require_counts()
        empty = np.flatnonzero((counts.positives == 0) | (counts.negatives == 0))
        if len(empty):
            raise ConfigError(
                f"{self._label()}: {class_labels(empty, self.class_names)} "
                f"{'has' if len(empty) == 1 else 'have'} no positive or no negative label in the training split, "
                "so the weight (P+N)/P or (P+N)/N is infinite; drop such classes or use another loss"
            )
        total = counts.positives + counts.negatives
        self.positive_weight = total / counts.positives
        self.negative_weight = total / counts.negatives

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probabilities(x)
        w_pos = self._constant("w_pos", self.positive_weight, x)
        w_neg = self._constant("w_neg", self.negative_weight, x)
        return -(w_pos * y * log_p + w_neg * (1 - y) * log_q)
