"""Query decoder head (seed 004, SPEC 3): label embeddings query the image feature map.

feature map (B, C, h, w), before pooling -> h*w tokens -> linear to `dim`
(768) = keys and values; label vectors (K x e: text encoder, matrix file or
GloVe) -> linear to `dim` = queries -> `layers` (4) transformer decoder
layers (pre-norm, final LayerNorm) -> one output vector per class ->
classifier: `separate` (seed 004's class-wise classifiers: one (dim -> 1)
linear per class, stored as a K x dim weight and K biases) or one shared
(dim -> 1) linear (the ablation).

Zero-shot (`score_classes`): a class name that was not trained gets a query
from the same embedding source (a text encoder, or a matrix file with a row
for it) and is decoded next to the trained queries under an attention mask:
trained queries do not see new ones (their logits are unchanged) and each
new query sees the trained ones and itself only (its score does not depend
on which other names are asked). Its classifier is the shared one; with
separate classifiers, which have nothing for an untrained class, it is the
mean of the trained classifiers (weights and bias): the classifier of an
"average" class, the only choice that favours no trained class.
`zero_shot_classes` embeds names at build, so they are saved with the
model and scored without the encoder at prediction time.

`reset_classifier` re-initialises the classifier only (the per-class or
shared linear); projections and decoder layers keep their weights.

Where seed 004 is silent: one linear layer (not an MLP) projects the image
features; no positional encoding is added to the image tokens (CNN
features carry position, and cross-attention then acts as a class-specific
attention pooling); 8 heads, feed-forward width 2048 and dropout 0.1 are
the usual transformer defaults. For explanations use Grad-CAM on the
feature map: the head is not linear in it, so it has no `class_maps`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cxrlt.errors import ConfigError
from cxrlt.labels import canonical_key
from cxrlt.models.embeddings import LabelEmbeddingSpec, LabelVectors, input_layer, label_vectors, new_name_vectors
from cxrlt.models.heads.base import Head
from cxrlt.registry import HEADS


@HEADS.register("query", context=("in_features", "num_classes", "class_names", "train_labels"))
class QueryDecoderHead(Head):
    """Transformer decoder with label-embedding queries over the feature map (see the module docstring)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        train_labels: np.ndarray | None = None,
        embeddings: LabelEmbeddingSpec | None = None,
        dim: int = 768,
        layers: int = 4,
        heads: int = 8,
        ffn: int = 2048,
        dropout: float = 0.1,
        separate: bool = True,
        zero_shot_classes: tuple[str, ...] = (),
    ):
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ConfigError(f"query head: heads ({heads}) must divide dim ({dim})")
        if layers < 1:
            raise ConfigError(f"query head: layers must be at least 1, got {layers}")
        self.spec = LabelEmbeddingSpec.coerce(embeddings)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.zero_shot_names = [str(c) for c in zero_shot_classes]
        overlap = {canonical_key(c) for c in self.zero_shot_names} & {canonical_key(c) for c in self.class_names or []}
        if overlap:
            raise ConfigError(f"query head: zero_shot_classes repeat trained classes: {', '.join(sorted(overlap))}")
        trained: np.ndarray | None = None
        extra: np.ndarray | None = None
        if train_labels is not None:  # None: rebuilt for prediction; the saved state fills the buffers
            trained = label_vectors(self.spec, self.class_names, train_labels)
            extra = new_name_vectors(self.spec, self.zero_shot_names) if self.zero_shot_names else np.zeros(
                (0, trained.shape[1]), np.float32
            )
        self.labels = LabelVectors(trained, num_classes)
        self.zero_shot = LabelVectors(extra, len(self.zero_shot_names))
        self.project = nn.Linear(in_features, dim)
        self.query = input_layer(self.labels.dim, dim)
        layer = nn.TransformerDecoderLayer(dim, heads, ffn, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(dim))
        self.separate = separate
        if separate:
            self.class_weight = nn.Parameter(torch.empty(num_classes, dim))
            self.class_bias = nn.Parameter(torch.empty(num_classes))
        else:
            self.classifier = nn.Linear(dim, 1)
        self.reset_classifier()

    # ------------------------------------------------------------ pieces
    def memory(self, features: torch.Tensor) -> torch.Tensor:
        """Keys and values: the feature map's positions projected to `dim` (B, h*w, dim)."""
        return self.project(features.flatten(2).transpose(1, 2))

    def _decode(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # `shape[0]`, not `len()`: a traced export keeps the batch size as a graph value, not a constant.
        return self.decoder(queries[None].expand(memory.shape[0], -1, -1), memory, tgt_mask=mask)

    def _trained_logits(self, out: torch.Tensor) -> torch.Tensor:
        if self.separate:
            return (out * self.class_weight).sum(dim=-1) + self.class_bias
        return self.classifier(out)[..., 0]

    def _new_class_logits(self, out: torch.Tensor) -> torch.Tensor:
        if self.separate:
            return out @ self.class_weight.mean(dim=0) + self.class_bias.mean()
        return self.classifier(out)[..., 0]

    # ---------------------------------------------------------- interface
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self._trained_logits(self._decode(self.query(self.labels()), self.memory(features)))

    def score_classes(self, features: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """Logits (B, len(names)) for any class names: trained ones as `forward`, others zero-shot.

        A name that is neither trained nor in `zero_shot_classes` is embedded
        now by the head's embedding source (a text encoder must be available
        locally, or the matrix file must have a row for it).
        """
        if self.labels.placeholder:
            raise RuntimeError("load the saved weights into this head before scoring classes")
        if self.class_names is None:
            raise ConfigError("this query head was built without class names; build it with class_names to score "
                              "classes by name")
        trained = {canonical_key(c): i for i, c in enumerate(self.class_names)}
        known = {canonical_key(c): i for i, c in enumerate(self.zero_shot_names)}
        asked = {canonical_key(n): n for n in names}
        unseen = [name for key, name in asked.items() if key not in trained and key not in known]
        known.update({canonical_key(n): len(self.zero_shot_names) + i for i, n in enumerate(unseen)})
        new_vectors = self.zero_shot()
        if unseen:
            fresh = torch.as_tensor(new_name_vectors(self.spec, unseen), device=new_vectors.device)
            new_vectors = torch.cat([new_vectors, fresh.to(new_vectors.dtype)])
        k, m = len(self.class_names), len(new_vectors)
        queries = self.query(torch.cat([self.labels(), new_vectors]))
        out = self._decode(queries, self.memory(features), _zero_shot_mask(k, m, queries.device))
        logits = torch.cat([self._trained_logits(out[:, :k]), self._new_class_logits(out[:, k:])], dim=1)
        columns = [trained[key] if key in trained else k + known[key] for key in map(canonical_key, names)]
        return logits[:, columns]

    def reset_classifier(self) -> None:
        if self.separate:
            bound = 1.0 / math.sqrt(self.class_weight.shape[1])  # as nn.Linear(dim, 1), class by class
            nn.init.uniform_(self.class_weight, -bound, bound)
            nn.init.uniform_(self.class_bias, -bound, bound)
        else:
            self.classifier.reset_parameters()


def _zero_shot_mask(trained: int, new: int, device: torch.device) -> torch.Tensor:
    """Decoder self-attention mask (True = blocked): no query sees a new query other than itself."""
    mask = torch.zeros(trained + new, trained + new, dtype=torch.bool, device=device)
    mask[:, trained:] = True
    index = torch.arange(trained, trained + new, device=device)
    mask[index, index] = False
    return mask
