"""Class-aware loss, CAL (seed 000, eqs. 7-9)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cxrlt.errors import ConfigError
from cxrlt.losses.base import (CONTEXT, ClassCounts, MultiLabelLoss, class_labels, effective_number_alpha,
                               log_one_minus_shifted, require_positives)
from cxrlt.params import BelowOne
from cxrlt.registry import LOSSES

ClassWeighting = Literal["none", "inverse", "sqrt_inverse", "effective_number"]


def class_aware_class_weights(counts: ClassCounts, method: ClassWeighting, beta: float = 0.9999) -> np.ndarray | None:
    """The w_i of CAL's eq. 8, normalised to mean 1 (None for `none`).

    `inverse`: 1 / a_i with a_i = P_i / (P_i + N_i); `sqrt_inverse`:
    1 / sqrt(a_i); `effective_number`: (1 - beta) / (1 - beta^P_i). The
    thesis does not define w_i; this choice is the toolkit's (SPEC 1.5).
    """
    if method == "none":
        return None
    if method == "effective_number":
        raw = effective_number_alpha(counts.positives, beta)
    else:
        frequency = counts.frequency
        raw = 1.0 / frequency if method == "inverse" else 1.0 / np.sqrt(frequency)
    return raw / raw.mean()


@LOSSES.register("class_aware", context=CONTEXT)
class ClassAwareLoss(MultiLabelLoss):
    """L+ = -w+ log p, L- = -w- log(1 - p_m), total sum_i w_i L_i (SPEC 1.5).

    With a_i = P_i / (P_i + N_i): w+ = (1 - a_i)^(1 - p), w- = 1 - (1 - a_i)^p
    (p, not p_m, as eq. 9 is written), p_m = max(p - margin, 0). The
    thesis recipe is margin 0.2 and `class_weights: none` (our choice: the
    thesis gives no w_i); `beta` is used by `class_weights: effective_number`. w+ and w- depend on p and are differentiated
    through unless `detach_weights`. Properties (thesis fig. 10): at equal
    p the positive loss of a rarer class is larger; every negative loss is
    at most a_i times BCE's (so negatives of all classes stay small and
    close); negatives with p <= margin cost nothing.
    """

    name = "class_aware"

    def __init__(
        self,
        margin: BelowOne = 0.2,
        class_weights: ClassWeighting = "none",
        beta: BelowOne = 0.9999,
        detach_weights: bool = False,
        **options: Any,
    ):
        super().__init__(**options)
        self.margin, self.class_weights, self.beta = float(margin), class_weights, float(beta)
        self.detach_weights = bool(detach_weights)
        counts = self._require_counts()
        no_negative = np.flatnonzero(~(counts.negatives > 0))
        if len(no_negative):
            raise ConfigError(
                f"{self._label()}: {class_labels(no_negative, self.class_names)} "
                f"{'has' if len(no_negative) == 1 else 'have'} no negative label in the training split "
                "(a_i = 1 makes w+ = 0); drop such classes or use another loss"
            )
        if class_weights != "none":
            require_positives(self, counts.positives)
        self.frequency = counts.frequency
        self.log_negative_frequency = np.log1p(-self.frequency)
        self._set_class_weight(class_aware_class_weights(counts, class_weights, self.beta))

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        log_q = self._constant("log1ma", self.log_negative_frequency, x)  # log(1 - a_i) <= 0
        # (1-a)^(1-p) = exp((1-p) log(1-a)) and 1-(1-a)^p = -expm1(p log(1-a)): exact for small a_i.
        w_pos = torch.exp(torch.sigmoid(-x) * log_q)
        w_neg = -torch.expm1(torch.sigmoid(x) * log_q)
        if self.detach_weights:
            w_pos, w_neg = w_pos.detach(), w_neg.detach()
        positive = -w_pos * F.logsigmoid(x)
        negative = -w_neg * log_one_minus_shifted(x, self.margin)
        return y * positive + (1 - y) * negative

    def extra_repr(self) -> str:
        own = f"margin={self.margin}, class_weights={self.class_weights!r}, detach_weights={self.detach_weights}"
        return ", ".join(filter(None, [own, super().extra_repr()]))
