"""Scoring a chosen list of class names with a saved model (trained classes, or zero-shot ones)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from cxrlt.errors import ConfigError
from cxrlt.labels import canonical_key


class ClassScorer(nn.Module):
    """`model` restricted (or extended) to `names`: logits (B, len(names)) in that order.

    Trained classes are picked from the model's output by canonical name (so
    "Effusion" finds "Pleural Effusion"). A name the model was not trained on
    is scored zero-shot by a query-decoder head (`score_classes`, seed 004),
    which embeds the new name with its text encoder or embedding file; any
    other head refuses it with the list of classes it knows.
    """

    def __init__(self, model: nn.Module, trained: Sequence[str], names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, [str(n) for n in names]
        index = {canonical_key(c): i for i, c in enumerate(trained)}
        self.columns = [index.get(canonical_key(n)) for n in self.names]
        unknown = [n for n, column in zip(self.names, self.columns) if column is None]
        self.zero_shot = bool(unknown)
        if unknown and not hasattr(model.head, "score_classes"):
            raise ConfigError(
                f"the model was not trained on {', '.join(map(repr, unknown))} and its head "
                f"({type(model.head).__name__}) cannot score new class names; only a query-decoder head with "
                f"label-text embeddings can (zero-shot). Its classes: {', '.join(trained)}"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.zero_shot:
            return self.model.head.score_classes(self.model.features(images), self.names)
        return self.model(images)[:, self.columns]
