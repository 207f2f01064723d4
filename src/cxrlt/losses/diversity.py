"""RIDE's diversity regulariser for a head of n experts (seed 002, eqs. 2-4; SPEC 1.8).

For sigmoid outputs each class is a Bernoulli variable, and the KL between
two experts' outputs is the sum over classes of Bernoulli KLs
KL(q || p) = q log(q/p) + (1-q) log((1-q)/(1-p)); it is averaged over the
images of the batch. Two forms:

- `approximate` (eq. 3, what RIDE trains with):
  L = -1/(n-1) * sum_i KL(p_bar || p_i), p_bar = mean of the experts'
  probabilities. It compares each expert with the consensus.
- `pairwise` (eq. 2, exact): L = -1/(n-1) * sum over ordered pairs i != j of
  KL(p_i || p_j). For Bernoulli outputs KL(p||q) + KL(q||p) = (p - q) *
  (logit p - logit q), so the n(n-1) terms collapse to
  n * sum_i (p_i - p_bar)(z_i - z_bar) with z the logits: exact, and O(n).

Both are 0 exactly when all experts agree and negative otherwise. They are
not equal: by convexity of KL in its first argument,
sum_i KL(p_bar || p_i) <= (1/n) sum_{i != j} KL(p_j || p_i), and for small
disagreements (second order in p_i - p_bar, where KL is half the squared
Fisher distance) approximate ~= pairwise / (2n). Minimising L pushes the
experts apart; the classification loss keeps them accurate, and the total
is L_clf + lambda L (lambda = 0.2 in seed 002): the experts head adds it in
`training_loss` (`cxrlt.models.heads.experts`).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DiversityForm = Literal["approximate", "pairwise"]


def _stack(expert_logits: Tensor | Sequence[Tensor]) -> Tensor:
    z = expert_logits if isinstance(expert_logits, Tensor) else torch.stack(list(expert_logits))
    if z.dim() != 3:
        raise ValueError(
            f"expert logits must be [experts, batch, classes] (or a list of [batch, classes]); got {tuple(z.shape)}"
        )
    if z.shape[0] < 2:
        raise ValueError(f"the diversity term needs at least 2 experts, got {z.shape[0]}")
    return z


def diversity_loss(expert_logits: Tensor | Sequence[Tensor], form: DiversityForm = "approximate") -> Tensor:
    """-1/(n-1) * sum of expert KLs (see module docstring), summed over classes, mean over images.

    `expert_logits`: a list of n tensors [batch, classes] or one tensor
    [n, batch, classes]. Computed in float32 (float64 for float64 input)
    from logits with log-sigmoid, so it is finite for any finite logits.
    """
    z = _stack(expert_logits)
    n = z.shape[0]
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.to(dtype)
        if form == "approximate":
            log_p, log_q = F.logsigmoid(z), F.logsigmoid(-z)
            log_p_bar = torch.logsumexp(log_p, dim=0) - math.log(n)
            log_q_bar = torch.logsumexp(log_q, dim=0) - math.log(n)
            kl = torch.exp(log_p_bar) * (log_p_bar - log_p) + torch.exp(log_q_bar) * (log_q_bar - log_q)
            total = kl.sum(dim=0)
        elif form == "pairwise":
            p = torch.sigmoid(z)
            total = n * ((p - p.mean(dim=0)) * (z - z.mean(dim=0))).sum(dim=0)
        else:
            raise ValueError(f"unknown diversity form {form!r}; choose 'approximate' or 'pairwise'")
        return -total.sum(dim=-1).mean() / (n - 1)


class DiversityLoss(nn.Module):
    """`weight * diversity_loss(expert_logits, form)`: the lambda L_div term of seed 002's eq. 4."""

    def __init__(self, weight: float = 0.2, form: DiversityForm = "approximate"):
        super().__init__()
        if form not in ("approximate", "pairwise"):
            raise ValueError(f"unknown diversity form {form!r}; choose 'approximate' or 'pairwise'")
        self.weight, self.form = float(weight), form

    def forward(self, expert_logits: Tensor | Sequence[Tensor]) -> Tensor:
        return self.weight * diversity_loss(expert_logits, self.form)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, form={self.form!r}"
