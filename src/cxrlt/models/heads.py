"""Classification heads: feature map (B, C, H, W) -> logits (B, K).

A head owns its pooling (so heads that do not pool, like the query decoder,
fit the same interface) and can be re-initialised for decoupled training.
The toolkit supplies the context arguments: `in_features`, `num_classes`,
`pooling` (an nn.Module) and `post_pool` (the backbone's post-pooling norm).
"""

from __future__ import annotations

import torch
from torch import nn

from cxrlt.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")
HEAD_CONTEXT = ("in_features", "num_classes", "pooling", "post_pool")


class Head(nn.Module):
    """Base of all heads."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def reset_classifier(self) -> None:
        """Re-initialise the classifier weights (decoupled stage 2)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()


@HEADS.register("linear", context=HEAD_CONTEXT)
class LinearHead(Head):
    """Pool -> (dropout) -> one linear layer for all classes.

    `dropout > 0` gives the dropout + linear head of seed 003. The classifier
    can be tau-normalised (Kang et al.): w_k / ||w_k||^tau, bias kept (in
    multi-label sigmoid outputs the bias carries each class' prevalence);
    tau is a saved buffer, 0 = plain linear.
    """

    def __init__(self, in_features: int, num_classes: int, pooling: nn.Module, post_pool: nn.Module | None = None,
                 dropout: float = 0.0):
        super().__init__()
        self.pool = pooling
        self.post_pool = post_pool if post_pool is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)
        self.register_buffer("tau", torch.tensor(0.0))

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled (and post-pool normalised) image vectors (B, D)."""
        return self.post_pool(self.pool(features))

    def logits_from_pooled(self, pooled: torch.Tensor, tau: float | torch.Tensor | None = None) -> torch.Tensor:
        """Logits of pooled vectors with the classifier tau-normalised by `tau` (default: the saved tau)."""
        tau = self.tau if tau is None else tau
        weight = self.fc.weight / self.fc.weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)
        return nn.functional.linear(pooled, weight, self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(self.dropout(self.pooled(features)))

    def reset_classifier(self) -> None:
        self.fc.reset_parameters()
        self.tau.zero_()
