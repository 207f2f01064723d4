"""The label graph of the ML-GCN heads: graph files, graph buffers, the GCN classifier.

`GraphFile` is what `cxrlt labels graph` writes (one .npz of plain arrays);
`LabelGraph` holds a head's correlation matrix and label vectors as
buffers (saved with the weights, never recomputed for prediction);
`GCNClassifier` turns the vectors into classifier rows with two graph
convolutions H' = A H W (ML-GCN, seed 002).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from cxrlt.data.stats import conditional_probabilities, positive_matrix
from cxrlt.errors import ConfigError, InputError
from cxrlt.io import atomic_path
from cxrlt.labels import canonical_key
from cxrlt.models.embeddings import LabelEmbeddingSpec, LabelVectors, input_layer, label_vectors, match_rows
from cxrlt.models.graph import DEFAULT_P, DEFAULT_TAU, RANGES, adjacency_from_conditional, in_range

if TYPE_CHECKING:
    from cxrlt.config import RunConfig

GRAPH_KEYS = ("classes", "adjacency", "conditional", "positives", "embeddings", "tau", "p", "method", "images")


# --------------------------------------------------------------- graph file
@dataclass
class GraphFile:
    """What `cxrlt labels graph` saves: the correlation matrix and label vectors of a training split."""

    classes: list[str]
    adjacency: np.ndarray  # normalised ML-GCN matrix (K x K)
    conditional: np.ndarray  # P(L_j | L_i) (K x K; NaN where undefined: cxrlt.data.stats)
    positives: np.ndarray  # training positives per class
    embeddings: np.ndarray  # K x d
    tau: float
    p: float
    method: str  # how the embeddings were made
    images: int  # training images counted

    @classmethod
    def from_labels(
        cls, labels: np.ndarray, classes: Sequence[str], embeddings: LabelEmbeddingSpec | None = None,
        tau: float = DEFAULT_TAU, p: float = DEFAULT_P,
    ) -> "GraphFile":
        """Statistics and vectors of a training label matrix (images x classes)."""
        spec = LabelEmbeddingSpec.coerce(embeddings)
        labels = np.asarray(labels, dtype=np.float32)
        conditional = conditional_probabilities(labels)
        return cls(
            classes=[str(c) for c in classes],
            adjacency=adjacency_from_conditional(conditional, tau, p).astype(np.float32),
            conditional=conditional.astype(np.float32),
            positives=positive_matrix(labels).sum(axis=0).astype(np.int64),
            embeddings=label_vectors(spec, list(classes), labels),
            tau=float(tau), p=float(p), method=spec.describe(), images=int(labels.shape[0]),
        )

    def save(self, path: str | Path) -> Path:
        """Write the .npz atomically (plain arrays only: loading never unpickles)."""
        arrays = {key: getattr(self, key) for key in GRAPH_KEYS}
        arrays["classes"] = np.asarray(self.classes, dtype=str)
        arrays["method"] = np.asarray(self.method, dtype=str)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "GraphFile":
        """Read a file written by `save`, with errors naming what is missing."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"graph file {path} not found (write one with `cxrlt labels graph`)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in GRAPH_KEYS if key not in archive.files]
                if missing:
                    raise InputError(f"not a `cxrlt labels graph` file: it lacks {', '.join(missing)}", path)
                data = {key: archive[key] for key in GRAPH_KEYS}
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read the graph file ({exc})", path) from None
        classes = [str(c) for c in data["classes"].tolist()]
        k = len(classes)
        for key in ("adjacency", "conditional"):
            if data[key].shape != (k, k):
                raise InputError(f"`{key}` has shape {data[key].shape}, expected ({k}, {k}) for {k} classes", path)
        if data["embeddings"].ndim != 2 or len(data["embeddings"]) != k:
            raise InputError(f"`embeddings` has shape {data['embeddings'].shape}, expected ({k}, dim)", path)
        return cls(
            classes=classes, adjacency=data["adjacency"].astype(np.float32),
            conditional=data["conditional"].astype(np.float32), positives=data["positives"].astype(np.int64),
            embeddings=data["embeddings"].astype(np.float32), tau=float(data["tau"]), p=float(data["p"]),
            method=str(data["method"]), images=int(data["images"]),
        )

    def for_classes(self, class_names: Sequence[str], where: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(adjacency, embeddings) for `class_names` (matched by canonical name, any order).

        With exactly the file's classes the stored matrix is reordered; for a
        subset it is recomputed from the stored conditional probabilities
        (with the file's tau and p), which do not depend on the other classes.
        """
        vectors = match_rows(self.classes, self.embeddings, class_names, where)
        order = np.asarray([[canonical_key(c) for c in self.classes].index(canonical_key(n)) for n in class_names])
        if len(class_names) == len(self.classes):
            adjacency = self.adjacency[np.ix_(order, order)]
        else:
            adjacency = adjacency_from_conditional(self.conditional[np.ix_(order, order)], self.tau, self.p)
        return adjacency.astype(np.float32), vectors


def graph_of_run(
    config: "RunConfig", origin: str | Path, embeddings: LabelEmbeddingSpec | None = None,
    tau: float | None = None, p: float | None = None, default_embeddings: LabelEmbeddingSpec | None = None,
) -> GraphFile:
    """The label graph of the training split of a run config (`origin`: where it was read, for messages).

    `tau`, `p` and `embeddings` default to the run's head settings
    (`model.head`), else tau 0.4, p 0.2 and `default_embeddings` (GloVe
    300-d when not given).
    """
    from cxrlt.data.sources import load_table

    head = config.model.head.params
    train = load_table(config.data).split("train")
    if len(train) == 0:
        raise InputError(f"the training split of the data in {origin} is empty; check data.split")
    if embeddings is None:
        fallback = default_embeddings or LabelEmbeddingSpec.coerce({"method": "glove"})
        embeddings = fallback if head.get("embeddings") is None else LabelEmbeddingSpec.coerce(head["embeddings"])
    tau = _head_setting(tau, head, "tau", DEFAULT_TAU, origin)
    p = _head_setting(p, head, "p", DEFAULT_P, origin)
    return GraphFile.from_labels(train.labels, train.classes, embeddings, tau=tau, p=p)


def _head_setting(given: float | None, head: dict[str, Any], key: str, default: float, origin: str | Path) -> float:
    """`given` (checked by the caller), else the head's `key` (checked here: `graph.RANGES`), else `default`."""
    if given is not None:
        return float(given)
    value = float(head.get(key, default))
    if not in_range(key, value):
        raise ConfigError(f"{origin}: model.head.{key} is {value:g}; it must lie in {RANGES[key]}")
    return value


def format_graph(graph: GraphFile) -> str:
    """A readable summary: sizes, settings, and each class's neighbours with P(L_j | L_i)."""
    k = len(graph.classes)
    edges = (graph.conditional >= graph.tau) & ~np.eye(k, dtype=bool)
    lines = [
        f"label graph of {graph.images:,} training images, {k} classes (tau {graph.tau:g}, p {graph.p:g}): "
        f"{int(edges.sum())} edges, {int((~edges.any(axis=1)).sum())} classes without neighbours",
        f"embeddings: {graph.method}, {graph.embeddings.shape[0]} x {graph.embeddings.shape[1]}",
        "",
        f"{'class':<28}{'positives':>10}  neighbours: P(L_j | L_i)",
    ]
    for i, name in enumerate(graph.classes):
        order = [j for j in np.argsort(-graph.conditional[i], kind="stable") if edges[i, j]]
        neighbours = ", ".join(f"{graph.classes[j]} {graph.conditional[i, j]:.2f}" for j in order) or "-"
        lines.append(f"{name[:27]:<28}{int(graph.positives[i]):>10,}  {neighbours}")
    return "\n".join(lines)


# ----------------------------------------------------------- graph modules
def graph_and_vectors(
    num_classes: int, class_names: Sequence[str] | None, train_labels: np.ndarray, graph: Path | None,
    embeddings: LabelEmbeddingSpec | dict | str | None, tau: float, p: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(adjacency, label vectors) of a head: from the graph file (its tau and p), else from the training labels.

    `embeddings`, when given, replaces the graph file's vectors.
    """
    if train_labels.shape[1] != num_classes:
        raise ConfigError(f"the training labels have {train_labels.shape[1]} classes, the model {num_classes}")
    if graph is not None:
        if class_names is None:
            raise ConfigError("a graph file is matched to the classes by name, and the class names are missing")
        adjacency, vectors = GraphFile.load(graph).for_classes(class_names, graph)
        if embeddings is not None:
            vectors = label_vectors(LabelEmbeddingSpec.coerce(embeddings), class_names, train_labels)
        return adjacency, vectors
    adjacency = adjacency_from_conditional(conditional_probabilities(train_labels), tau, p).astype(np.float32)
    return adjacency, label_vectors(LabelEmbeddingSpec.coerce(embeddings), class_names, train_labels)


class LabelGraph(nn.Module):
    """The normalised correlation matrix (`adjacency` buffer) and the label vectors of a head."""

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None, train_labels: np.ndarray | None,
        graph: Path | None, embeddings: LabelEmbeddingSpec | dict | str | None, tau: float, p: float,
    ):
        super().__init__()
        adjacency: np.ndarray | None = None
        vectors: np.ndarray | None = None
        if train_labels is not None:  # None: rebuilt for prediction; the saved state fills the buffers
            adjacency, vectors = graph_and_vectors(num_classes, class_names, train_labels, graph, embeddings, tau, p)
        self.register_buffer(
            "adjacency", torch.zeros(num_classes, num_classes) if adjacency is None else torch.as_tensor(adjacency)
        )
        self.vectors = LabelVectors(vectors, num_classes)

    @property
    def dim(self) -> int | None:
        """Size of the label vectors (None until a saved state is loaded into a rebuilt model)."""
        return self.vectors.dim

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.vectors.placeholder:
            raise RuntimeError(
                "this head was built without training labels (to be filled from saved weights) and holds no label "
                "graph yet: load a saved state into it (cxrlt.inference.saved_model.load_model) or build it with train_labels"
            )
        return self.vectors(), self.adjacency


class GCNClassifier(nn.Module):
    """Two graph convolutions: label vectors (K x d) and adjacency -> classifier rows (K x out_features)."""

    def __init__(self, embedding_dim: int | None, hidden: int, out_features: int, negative_slope: float = 0.2):
        super().__init__()
        self.layer1 = input_layer(embedding_dim, hidden, bias=False)
        self.layer2 = nn.Linear(hidden, out_features, bias=False)
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, vectors: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(adjacency @ self.layer1(vectors))
        return adjacency @ self.layer2(hidden)

    def reset_parameters(self) -> None:
        """Fresh weights for both graph convolutions (decoupled stage 2)."""
        self.layer1.reset_parameters()
        self.layer2.reset_parameters()
