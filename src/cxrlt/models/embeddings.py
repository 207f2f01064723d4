"""Label embeddings for the label-aware heads (GCN, experts, query decoder).

Three sources, chosen in a head's config as `embeddings:`

- `glove` (default): GloVe vectors trained here on the training split's
  "label sentences" (seed 002): each image's positive labels form one
  sentence and the whole sentence is the context window, so the
  co-occurrence count of two labels is the number of images where both are
  positive. See `glove_vectors` for the objective and our two additions.
- `file`: a user-supplied matrix: `.npz` with arrays `classes` and
  `embeddings` (e.g. written by `cxrlt labels graph`), `.csv` (class name,
  then the vector; an optional header row), or `.npy` (rows already in the
  model's class order; names cannot be checked). Rows are matched to
  classes by canonical name (`cxrlt.labels.canonical_name`); extra rows are
  ignored, a missing class is an error.
- `text`: a frozen text encoder from `transformers` (PubMedBERT,
  Clinical-T5 or any encoder; a hub name already in the local cache or a
  local folder; never downloaded): the mean of the last hidden states of
  `prompt` with the class name filled in, e.g. "chest x-ray showing {name}".

YAML: `embeddings: glove`, `embeddings: path/to/vectors.npz`, or
`embeddings: {method: text, model: /models/BiomedBERT, prompt: "chest x-ray showing {name}"}`.

Vectors are computed once when the model is built and kept as a buffer
(`LabelVectors`), so they are saved with the weights. A model rebuilt for
prediction (no training labels in the context) gets an empty placeholder
that takes its size from the saved state, and the layers that read the
vectors are `nn.LazyLinear` until the state is loaded (`input_layer`).
With `normalise` (default) every vector is scaled to unit length, so each
class enters the graph or decoder with the same magnitude.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from cxrlt.config import Strict
from cxrlt.data.stats import cooccurrence
from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import canonical_key, class_mapping

MATRIX_SUFFIXES = (".npz", ".npy", ".csv")


class LabelEmbeddingSpec(Strict):
    """Where a head's label vectors come from (see the module docstring)."""

    method: Literal["glove", "file", "text"] = "glove"
    dim: int = Field(300, ge=2, description="glove: vector size (seed 002: 300)")
    seed: int = Field(0, description="glove: seed of the initial vectors")
    path: Path | None = Field(None, description="file: .npz / .csv / .npy matrix")
    model: str | None = Field(None, description="text: local folder, or a hub name already in the local cache")
    prompt: str = Field("{name}", description="text: template with {name}, e.g. 'chest x-ray showing {name}'")
    normalise: bool = Field(True, description="scale every vector to unit length")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, Path):
            data = str(data)
        if not isinstance(data, str):
            return data
        if data == "glove":
            return {"method": "glove"}
        if data.lower().endswith(MATRIX_SUFFIXES):
            return {"method": "file", "path": data}
        raise ValueError(
            f"embeddings {data!r}: write `glove`, a matrix file ending in {', '.join(MATRIX_SUFFIXES)}, or "
            "{method: text, model: FOLDER_OR_NAME} for a text encoder"
        )

    @model_validator(mode="after")
    def _complete(self) -> "LabelEmbeddingSpec":
        if self.method == "file" and self.path is None:
            raise ValueError("embeddings method 'file' needs `path`")
        if self.method == "text":
            if not self.model:
                raise ValueError("embeddings method 'text' needs `model` (a local folder or a cached hub name)")
            if "{name}" not in self.prompt:
                raise ValueError(f"embeddings prompt {self.prompt!r} must contain {{name}}")
        return self

    @classmethod
    def coerce(cls, value: "LabelEmbeddingSpec | dict[str, Any] | str | Path | None") -> "LabelEmbeddingSpec":
        """A spec from what a registry hands a factory (a validated dict), a string, or None (glove)."""
        if isinstance(value, cls):
            return value
        try:
            return cls.model_validate("glove" if value is None else value)
        except ValueError as exc:
            raise ConfigError(f"embeddings: {exc}") from None

    def describe(self) -> str:
        """One line naming the source (for summaries and errors)."""
        if self.method == "glove":
            return f"glove (dim {self.dim}, seed {self.seed})"
        if self.method == "file":
            return f"file {self.path}"
        return f"text encoder {self.model} (prompt {self.prompt!r})"


# -------------------------------------------------------------------- glove
def glove_vectors(
    labels: np.ndarray,
    dim: int = 300,
    seed: int = 0,
    iterations: int = 1000,
    x_max: float = 100.0,
    alpha: float = 0.75,
    learning_rate: float = 0.05,
    smoothing: float = 1.0,
) -> np.ndarray:
    """GloVe vectors (classes x dim, float32) of the label sentences of a training label matrix.

    Minimises sum_ij f(X_ij) (w_i . c_j + b_i + d_j - log X_ij)^2 with
    f(x) = min(1, (x / x_max)^alpha) by full-batch AdaGrad from a seeded
    start (GloVe's initialisation and step rule) and returns w + c, as GloVe
    does. Deterministic for a given seed; a label matrix of NIH size takes
    well under a second (the sum runs over classes x classes).

    Three choices differ from GloVe on text, because a vocabulary of labels
    is tiny: `X = M + smoothing` over *all* pairs (M the co-occurrence
    counts), so that two labels never seen together pull apart instead of
    being left out of the objective, which per-label biases alone would
    then fit; the diagonal M_ii (a label's own count) is kept, so each label
    keeps a direction of its own next to the ones it shares; and the mean
    vector over classes is subtracted, because the part every label shares
    dominates the raw vectors of a few labels (raw cosines near 1) and says
    nothing about any one of them (heads without a bias, like the GCN,
    could not tell the classes apart).
    """
    counts = cooccurrence(labels).astype(np.float64)
    if counts.shape[0] < 2:
        raise ConfigError("glove label embeddings need at least 2 classes")
    if not np.any(np.diag(counts) > 0):
        raise ConfigError("glove label embeddings need training labels with at least one positive")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    # smoothing 0 is GloVe proper: pairs never seen together are left out.
    used = counts > 0 if smoothing == 0 else np.ones(counts.shape, dtype=bool)
    x = np.where(used, counts + smoothing, 1.0)
    target = np.log(x)
    weight = np.where(used, np.minimum(1.0, (x / x_max) ** alpha), 0.0)
    k = counts.shape[0]
    rng = np.random.default_rng(seed)
    w = (rng.random((k, dim)) - 0.5) / dim
    c = (rng.random((k, dim)) - 0.5) / dim
    b = np.zeros(k)
    d = np.zeros(k)
    # AdaGrad accumulators start at 1 as in the reference GloVe implementation.
    acc_w, acc_c, acc_b, acc_d = np.ones_like(w), np.ones_like(c), np.ones(k), np.ones(k)
    for _ in range(iterations):
        residual = weight * (w @ c.T + b[:, None] + d[None, :] - target)
        grad_w, grad_c = residual @ c, residual.T @ w
        grad_b, grad_d = residual.sum(axis=1), residual.sum(axis=0)
        for param, grad, acc in ((w, grad_w, acc_w), (c, grad_c, acc_c), (b, grad_b, acc_b), (d, grad_d, acc_d)):
            acc += grad * grad
            param -= learning_rate * grad / np.sqrt(acc)
    vectors = w + c
    return (vectors - vectors.mean(axis=0)).astype(np.float32)


# --------------------------------------------------------------------- file
def read_embedding_file(path: str | Path) -> tuple[list[str] | None, np.ndarray]:
    """(row names or None for .npy, matrix rows x dim) of an embedding file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("embedding file not found", path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"not a numeric .npy matrix ({exc})", path) from None
        return None, _as_matrix(matrix, path)
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in ("classes", "embeddings") if key not in archive.files]
                if missing:
                    raise InputError(
                        f"an embedding .npz needs arrays `classes` and `embeddings`; it lacks {', '.join(missing)} "
                        f"(it has: {', '.join(archive.files) or 'nothing'})", path,
                    )
                names = [str(name) for name in archive["classes"].tolist()]
                matrix = archive["embeddings"]
        except ValueError as exc:
            raise InputError(f"cannot read the .npz without unpickling ({exc})", path) from None
        matrix = _as_matrix(matrix, path)
        if len(names) != len(matrix):
            raise InputError(f"{len(names)} class names but {len(matrix)} embedding rows", path)
        return names, matrix
    if suffix == ".csv":
        return _read_csv(path)
    raise InputError(f"unknown embedding file type {suffix!r}; expected one of {', '.join(MATRIX_SUFFIXES)}", path)


def _as_matrix(matrix: np.ndarray, path: Path) -> np.ndarray:
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise InputError(f"expected a 2-d numeric matrix (classes x dim), got {matrix.dtype} {matrix.shape}", path)
    if not np.isfinite(matrix).all():
        raise InputError("the embedding matrix holds NaN or infinite values", path)
    return matrix.astype(np.float32)


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)
                if any(cell.strip() for cell in row)]
    if rows and not _numeric(rows[0][1][1:]):
        rows = rows[1:]  # a header row
    if not rows:
        raise InputError("no embedding rows (expected: class name, then the vector's values)", path)
    width = len(rows[0][1])
    names, vectors = [], []
    for number, row in rows:
        if len(row) != width or width < 2:
            raise InputError(f"{len(row)} fields, expected {width} (class name, then {width - 1} values)", path, number)
        if not _numeric(row[1:]):
            raise InputError("a value is not a number", path, number)
        names.append(row[0].strip())
        vectors.append([float(cell) for cell in row[1:]])
    return names, _as_matrix(np.asarray(vectors), path)


def _numeric(cells: Sequence[str]) -> bool:
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return False
    return len(cells) > 0


def match_rows(names: Sequence[str], matrix: np.ndarray, wanted: Sequence[str], where: str | Path) -> np.ndarray:
    """Rows of `matrix` for the classes `wanted`, matched by canonical name; missing or repeated names are errors."""
    keys = [canonical_key(name) for name in names]
    repeated = sorted({names[i] for i, key in enumerate(keys) if keys.count(key) > 1})
    if repeated:
        raise InputError(f"class names repeat (after folding spelling): {', '.join(repeated)}", where)
    index = class_mapping(names, wanted)
    missing = [name for name, i in zip(wanted, index) if i is None]
    if missing:
        raise InputError(
            f"no row for {len(missing)} class(es): {', '.join(missing)}; the file has: {', '.join(names)}", where
        )
    return matrix[np.asarray(index, dtype=np.int64)]


def file_vectors(path: str | Path, class_names: Sequence[str]) -> np.ndarray:
    """The vectors of `class_names` from an embedding file (see `read_embedding_file`)."""
    names, matrix = read_embedding_file(path)
    if names is None:
        if len(matrix) != len(class_names):
            raise InputError(
                f".npy matrix has {len(matrix)} rows for {len(class_names)} classes; a .npy holds one row per class "
                "in the model's class order (use .npz or .csv with class names to match rows by name)", path,
            )
        return matrix
    return match_rows(names, matrix, class_names, path)


# --------------------------------------------------------------------- text
@functools.lru_cache(maxsize=2)
def _text_encoder(model: str) -> tuple[Any, Any]:
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ConfigError(
            "text-encoder label embeddings need the `transformers` package: pip install 'cxrlt[text]'"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
        encoder = AutoModel.from_pretrained(model, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"text encoder {model!r} is not available on this machine ({str(exc).splitlines()[0]}). cxrlt never "
            "downloads models: give a local folder holding the encoder and its tokenizer (config.json, weights, "
            "vocabulary), or a hub name already in the local Hugging Face cache."
        ) from None
    if getattr(encoder.config, "is_encoder_decoder", False):
        encoder = encoder.get_encoder()  # T5-style models: only the encoder embeds text
    encoder.eval().requires_grad_(False)
    return tokenizer, encoder


@torch.no_grad()
def text_vectors(model: str, names: Sequence[str], prompt: str = "{name}", batch_size: int = 32) -> np.ndarray:
    """Mean-pooled last hidden states (names x hidden, float32) of a frozen local text encoder."""
    tokenizer, encoder = _text_encoder(str(model))
    texts = [prompt.format(name=name) for name in names]
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
        batch = {key: value for key, value in batch.items() if key in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = encoder(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))
    return torch.cat(out).numpy().astype(np.float32)


# -------------------------------------------------------------------- entry
def label_vectors(
    spec: LabelEmbeddingSpec, class_names: Sequence[str] | None, train_labels: np.ndarray | None
) -> np.ndarray:
    """The (classes x dim) vectors `spec` describes, normalised if asked."""
    if spec.method == "glove":
        if train_labels is None:
            raise ConfigError("glove label embeddings need the training labels (the toolkit passes them at build)")
        vectors = glove_vectors(train_labels, spec.dim, spec.seed)
    else:
        if class_names is None:
            raise ConfigError(f"{spec.method} label embeddings need the class names (the toolkit passes them at build)")
        vectors = file_vectors(spec.path, class_names) if spec.method == "file" else text_vectors(
            spec.model, class_names, spec.prompt
        )
    return _normalised(vectors) if spec.normalise else vectors


def new_name_vectors(spec: LabelEmbeddingSpec, names: Sequence[str]) -> np.ndarray:
    """Vectors for class names the model was not trained on (zero-shot): text encoder or file rows."""
    if spec.method == "glove":
        raise ConfigError(
            "glove label vectors exist only for the training classes; score new class names with text-encoder "
            "embeddings ({method: text, model: ...}) or a matrix file that has rows for them"
        )
    vectors = file_vectors(spec.path, names) if spec.method == "file" else text_vectors(spec.model, names, spec.prompt)
    return _normalised(vectors) if spec.normalise else vectors


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ConfigError(
            "a label embedding vector is all zeros and cannot be normalised; set embeddings.normalise: false"
        )
    return (vectors / norms).astype(np.float32)


# ------------------------------------------------------------------ modules
class LabelVectors(nn.Module):
    """(rows x dim) label vectors kept as the buffer `vectors`.

    Built from values at training time; built with `values=None` when a saved
    model is rebuilt, as an empty (rows x 0) placeholder whose size is taken
    from the state dict being loaded.
    """

    def __init__(self, values: np.ndarray | None, rows: int):
        super().__init__()
        tensor = torch.zeros(rows, 0) if values is None else torch.as_tensor(np.asarray(values, dtype=np.float32))
        if tensor.shape[0] != rows:
            raise ValueError(f"expected {rows} label vectors, got {tensor.shape[0]}")
        self.register_buffer("vectors", tensor)
        self.placeholder = values is None

    @property
    def dim(self) -> int | None:
        """Vector size, or None for a placeholder."""
        return None if self.placeholder else int(self.vectors.shape[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch's signature
        saved = state_dict.get(prefix + "vectors")
        if self.placeholder and saved is not None:
            self.vectors = torch.empty_like(saved, device=self.vectors.device)
            self.placeholder = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self) -> torch.Tensor:
        return self.vectors


def input_layer(in_features: int | None, out_features: int, bias: bool = True) -> nn.Module:
    """A linear layer reading label vectors: `LazyLinear` when their size comes from a saved state."""
    if in_features is None:
        return nn.LazyLinear(out_features, bias=bias)
    return nn.Linear(in_features, out_features, bias=bias)
