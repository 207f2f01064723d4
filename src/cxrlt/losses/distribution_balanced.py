"""Distribution-balanced loss (Wu et al., ECCV 2020), following the authors' released code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cxrlt.errors import ConfigError
from cxrlt.losses.base import CONTEXT, MultiLabelLoss, class_labels, require_positives, safe_pow
from cxrlt.params import NonNegative, Positive
from cxrlt.registry import LOSSES


@LOSSES.register("distribution_balanced", context=CONTEXT)
class DistributionBalancedLoss(MultiLabelLoss):
    """Re-balanced weighting times negative-tolerant BCE, optionally focal (docs/methods.md, "DB").

    For image x with (hard or soft) labels y and class i with n_i training
    positives: r_i = (1/n_i) / sum_j y_j / n_j (class- over instance-level
    sampling probability), weight r^_i = `alpha` + sigmoid(`beta` (r_i - `mu`)),
    the same for every class of the image. An image without a positive has
    no instance-level sampling probability; r_i is then +infinity and
    r^_i = `alpha` + 1, the limit as sum_j y_j / n_j -> 0, which is also what
    the authors' code computes (a division by zero). With the class prior
    p_i = P_i / (P_i + N_i), z' = z + v_i, v_i = `kappa` log(p_i / (1 - p_i)),
    lambda = `neg_scale`:

        L = r^ [ -y log sigmoid(z') + (1 - y) (1/lambda) log(1 + exp(lambda z')) ]

    `focal` multiplies the positive term by sigmoid(-z')^g and the negative
    one by sigmoid(lambda z')^g, and both by `focal_balance` (DB-Focal). The
    paper's ablations: `negative_tolerant: false` (re-balanced weighting only,
    z' = z, lambda = 1) and `rebalance: false` (negative-tolerant
    regularisation only, r^ = 1).
    """

    name = "distribution_balanced"

    def __init__(
        self,
        alpha: NonNegative = 0.1,
        beta: NonNegative = 10.0,
        mu: NonNegative = 0.2,
        neg_scale: Positive = 2.0,
        kappa: NonNegative = 0.05,
        rebalance: bool = True,
        negative_tolerant: bool = True,
        focal: bool = False,
        focal_gamma: NonNegative = 2.0,
        focal_balance: Positive = 2.0,
        **options: Any,
    ):
        super().__init__(**options)
        self.alpha, self.beta, self.mu = float(alpha), float(beta), float(mu)
        self.rebalance, self.negative_tolerant, self.focal = bool(rebalance), bool(negative_tolerant), bool(focal)
        self.neg_scale = float(neg_scale) if self.negative_tolerant else 1.0
        self.kappa = float(kappa) if self.negative_tolerant else 0.0
        self.focal_gamma, self.focal_balance = float(focal_gamma), float(focal_balance)
        counts = self._require_counts()
        positives = counts.positives
        if self.rebalance:
            require_positives(self, positives, "its class-level sampling probability 1/(C n_i) is infinite")
            self.inverse_frequency = 1.0 / positives
        bias = np.zeros_like(positives)
        if self.kappa:
            prior = counts.frequency
            degenerate = np.flatnonzero(~((prior > 0) & (prior < 1)))
            if len(degenerate):
                raise ConfigError(
                    f"{self._label()}: {class_labels(degenerate, self.class_names)} "
                    f"{'has' if len(degenerate) == 1 else 'have'} no positive or no negative label in the "
                    "training split, so the class-prior bias kappa log(p / (1 - p)) is infinite; drop such classes "
                    "or set kappa: 0"
                )
            bias = self.kappa * np.log(prior / (1.0 - prior))
        self.bias = bias

    def rebalance_weight(self, y: Tensor) -> Tensor:
        """r^ for every (image, class) of targets `y` [batch, classes] (1 when re-balancing is off)."""
        if not self.rebalance:
            return torch.ones_like(y)
        inverse = self._constant("inverse_frequency", self.inverse_frequency, y)
        instance = (y * inverse).sum(dim=1, keepdim=True)
        has_positive = instance > 0
        ratio = inverse / torch.where(has_positive, instance, torch.ones_like(instance))
        # No positive: r = +inf and sigmoid(beta (r - mu)) = 1 (the limit, and the authors' code's value).
        mapped = torch.where(has_positive, torch.sigmoid(self.beta * (ratio - self.mu)), torch.ones_like(ratio))
        return self.alpha + mapped

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        z = x + self._constant("bias", self.bias, x)
        scale = self.neg_scale
        positive = -F.logsigmoid(z)
        negative = -F.logsigmoid(-scale * z) / scale
        if self.focal:
            positive = self.focal_balance * safe_pow(torch.sigmoid(-z), self.focal_gamma) * positive
            negative = self.focal_balance * safe_pow(torch.sigmoid(scale * z), self.focal_gamma) * negative
        return self.rebalance_weight(y) * (y * positive + (1 - y) * negative)

    def extra_repr(self) -> str:
        own = (f"alpha={self.alpha}, beta={self.beta}, mu={self.mu}, neg_scale={self.neg_scale}, kappa={self.kappa}, "
               f"rebalance={self.rebalance}, negative_tolerant={self.negative_tolerant}, focal={self.focal}")
        return ", ".join(filter(None, [own, super().extra_repr()]))
