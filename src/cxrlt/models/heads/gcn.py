"""ML-GCN head (seed 002, SPEC 3): classifiers generated from label vectors by a graph network.

Two graph convolutions H' = A H W (A the normalised correlation matrix of
`cxrlt.models.graph`) turn the label vectors (K x d) into K classifier
rows: d -> `hidden` (default in_features / 2: 1024 for a 2048-feature
ResNet, as in the paper) -> in_features, LeakyReLU(0.2) between them and no
bias (as ML-GCN). Logits = pooled image features x W^T.

The graph and vectors come from a `cxrlt labels graph` file (`graph:`), or
are computed from the training labels at build (`tau`, `p`, `embeddings`).
They are buffers: saved with the weights, never recomputed for prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cxrlt.errors import ConfigError
from cxrlt.models.embeddings import LabelEmbeddingSpec
from cxrlt.models.graph import DEFAULT_P, DEFAULT_TAU
from cxrlt.models.heads.base import Head, per_position
from cxrlt.models.label_graph import GCNClassifier, LabelGraph
from cxrlt.registry import HEADS


def check_gcn_params(tau: float, p: float, hidden: int | None) -> None:
    if not 0.0 < tau <= 1.0:
        raise ConfigError(f"gcn head: tau must lie in (0, 1], got {tau}")
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"gcn head: p must lie in [0, 1), got {p}")
    if hidden is not None and hidden < 1:
        raise ConfigError(f"gcn head: hidden must be positive, got {hidden}")


@HEADS.register("gcn", context=("in_features", "num_classes", "pooling", "post_pool", "class_names", "train_labels"))
class GCNHead(Head):
    """ML-GCN: pooled features x (GCN of label vectors over the label graph)^T.

    `graph`: a file from `cxrlt labels graph` (adjacency and vectors, made
    with the file's tau and p); else both come from the training labels
    with `tau`, `p` and `embeddings` (given together with `graph`,
    `embeddings` replaces the file's vectors).
    The classifier re-initialised by `reset_classifier` is the two GCN layers.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pooling: nn.Module,
        post_pool: nn.Module | None = None,
        class_names: Sequence[str] | None = None,
        train_labels: np.ndarray | None = None,
        graph: Path | None = None,
        embeddings: LabelEmbeddingSpec | None = None,
        tau: float = DEFAULT_TAU,
        p: float = DEFAULT_P,
        hidden: int | None = None,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        check_gcn_params(tau, p, hidden)
        self.pool = pooling
        self.post_pool = post_pool if post_pool is not None else nn.Identity()
        self.graph = LabelGraph(num_classes, class_names, train_labels, graph, embeddings, tau, p)
        self.gcn = GCNClassifier(self.graph.dim, hidden or max(1, in_features // 2), in_features, negative_slope)

    def class_weights(self) -> torch.Tensor:
        """The classifier rows W (K x in_features) the GCN makes from the label vectors."""
        return self.gcn(*self.graph())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.post_pool(self.pool(features)) @ self.class_weights().T

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kc->bkhw", per_position(self.post_pool, features), self.class_weights())

    def reset_classifier(self) -> None:
        self.gcn.reset_parameters()
