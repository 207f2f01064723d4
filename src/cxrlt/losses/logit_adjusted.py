"""Logit-adjusted loss (Menon et al., ICLR 2021) in its binary, per-class form."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from cxrlt.errors import ConfigError
from cxrlt.losses.base import CONTEXT, MultiLabelLoss, class_labels, log_probabilities
from cxrlt.params import NonNegative
from cxrlt.registry import LOSSES


@LOSSES.register("logit_adjusted", context=CONTEXT)
class LogitAdjustedLoss(MultiLabelLoss):
    """BCE on z + tau log(p_i / (1 - p_i)) in training; the model's plain z at inference (docs/methods.md).

    p_i = P_i / (P_i + N_i) is the training prior of class i: each class is a
    two-way problem (present / absent) whose priors are p_i and 1 - p_i, so
    the softmax adjustment tau log pi_y of Menon et al. becomes the log-odds
    of the prior added to the logit. Only the loss sees the adjustment; the
    network's logits are what prediction uses, which is the paper's
    "logit-adjusted loss" (not post-hoc adjustment).
    """

    name = "logit_adjusted"

    def __init__(self, tau: NonNegative = 1.0, **options: Any):
        super().__init__(**options)
        self.tau = float(tau)
        prior = self._require_counts().frequency
        degenerate = np.flatnonzero(~((prior > 0) & (prior < 1)))
        if self.tau and len(degenerate):
            raise ConfigError(
                f"{self._label()}: {class_labels(degenerate, self.class_names)} "
                f"{'has' if len(degenerate) == 1 else 'have'} no positive or no negative label in the training "
                "split, so the adjustment tau log(p / (1 - p)) is infinite; drop such classes or set tau: 0"
            )
        self.adjustment = self.tau * np.log(prior / (1.0 - prior)) if self.tau else np.zeros_like(prior)

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probabilities(x + self._constant("adjustment", self.adjustment, x))
        return -(y * log_p + (1 - y) * log_q)

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [f"tau={self.tau}", super().extra_repr()]))
