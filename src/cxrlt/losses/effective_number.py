"""Effective-number weights (Cui et al.) and the effective-number weighted focal loss of seed 001."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from cxrlt.errors import ConfigError
from cxrlt.losses.base import CONTEXT, MultiLabelLoss, class_labels, log_probabilities, safe_pow
from cxrlt.params import BelowOne, NonNegative, Positive, Probability
from cxrlt.registry import LOSSES


def effective_number_alpha(positives: Sequence[float], beta: float) -> np.ndarray:
    """a_k = (1 - beta) / (1 - beta^n_k), the inverse effective number of n_k samples (seed 001 eq. 3).

    Computed as (1 - beta) / -expm1(n_k log beta) so that beta close to 1
    loses no digits. Raises ConfigError for a class with no positive (the
    weight would be infinite) or a beta outside [0, 1).
    """
    n = np.asarray(positives, dtype=np.float64).reshape(-1)
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"effective-number weights need 0 <= beta < 1, got beta={beta}")
    empty = np.flatnonzero(~(n > 0))
    if len(empty):
        raise ConfigError(
            f"effective-number weights: class index {empty.tolist()} has no positive label in the training split "
            "(its weight would be infinite); drop such classes or use a loss that does not weight by positives"
        )
    if beta == 0.0:
        return np.ones_like(n)
    return (1.0 - beta) / -np.expm1(n * np.log(beta))


def effective_number_weights(positives: Sequence[float], beta: float, scale: float) -> np.ndarray:
    """Positive weights w+_k = s * C * a_k / sum_j a_j of seed 001 (eqs. 3-5; SPEC 1.6).

    `positives` are the training positives n_k per class, `beta` the
    effective-number parameter, `scale` the s of SPEC 1.6 (the paper writes
    1, the authors' released weights use 0.1). With `scale=1` these are the
    class-balanced weights of Cui et al. (normalised to sum C). The negative
    weights of seed 001 are 1 - w+.
    """
    alpha = effective_number_alpha(positives, beta)
    return scale * len(alpha) * alpha / alpha.sum()


def require_positives(loss: MultiLabelLoss, positives: np.ndarray) -> None:
    """Refuse, naming them, classes without a training positive (their effective-number weight is infinite)."""
    empty = np.flatnonzero(~(np.asarray(positives) > 0))
    if len(empty):
        raise ConfigError(
            f"{loss._label()}: {class_labels(empty, loss.class_names)} "
            f"{'has' if len(empty) == 1 else 'have'} no positive label in the training split, so the "
            "effective-number weight is infinite; drop such classes or use a loss that does not weight by positives"
        )


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
