"""The `linear` head: pool -> (dropout) -> one linear layer, tau-normalisable."""

from __future__ import annotations

import torch
from torch import nn

from cxrlt.models.heads.base import HEAD_CONTEXT, Head, per_position
from cxrlt.registry import HEADS


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
        return nn.functional.linear(pooled, self.classifier_weight(tau), self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(self.dropout(self.pooled(features)))

    def reset_classifier(self) -> None:
        self.fc.reset_parameters()
        self.tau.zero_()

    def classifier_weight(self, tau: float | torch.Tensor | None = None) -> torch.Tensor:
        """Per-class weight vectors (K, D), tau-normalised by `tau` (default: the saved tau)."""
        tau = self.tau if tau is None else tau
        return self.fc.weight / self.fc.weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        maps = torch.einsum("bchw,kc->bkhw", per_position(self.post_pool, features), self.classifier_weight())
        return maps + self.fc.bias[None, :, None, None]
