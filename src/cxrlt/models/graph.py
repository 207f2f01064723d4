"""The ML-GCN correlation matrix of a training label matrix (seed 002, SPEC 3).

Pure numpy functions. The label statistics they start from (which labels
are positive, P(L_j | L_i) and what it is with missing labels) are those of
`cxrlt.data.stats`, the one place they are defined.

The ML-GCN matrix is built in four steps (Chen et al. 2019, as SPEC 3 fixes):

1. conditional probabilities P[i, j] = P(L_j = 1 | L_i = 1),
   `cxrlt.data.stats.conditional_probabilities`: estimated over the images
   where class i is positive *and* class j is annotated (with no missing
   labels the usual M_ij / N_i); NaN where undefined;
2. binarised: A[i, j] = 1 if P[i, j] >= tau (off the diagonal; an undefined
   P is no evidence of co-occurrence, so no edge);
3. re-weighted with p: the off-diagonal entries of row i are scaled to sum
   to p and the diagonal is 1 - p. A class with no neighbour keeps all of
   its own information: its diagonal is 1 (every row then sums to 1);
4. normalised D^-1/2 A D^-1/2 with D the row sums.

Because step 3 makes every row sum to 1, step 4 leaves the matrix of step 3
unchanged (D = I); it is kept so that any correlation matrix handed to
`normalise_adjacency` is treated the same way. Row i of the result says
from which labels node i gathers features: the labels likely to be present
when i is.
"""

from __future__ import annotations

import numpy as np

from cxrlt.data.stats import conditional_probabilities

DEFAULT_TAU = 0.4
DEFAULT_P = 0.2
# Allowed values: an edge needs a positive threshold; a node keeps some of its own features (1 - p > 0).
RANGES = {"tau": "(0, 1]", "p": "[0, 1)"}


def in_range(name: str, value: float) -> bool:
    """Whether `value` is an allowed `tau` (0 < tau <= 1) or `p` (0 <= p < 1)."""
    return 0.0 < value <= 1.0 if name == "tau" else 0.0 <= value < 1.0


def binarise(conditional: np.ndarray, tau: float = DEFAULT_TAU) -> np.ndarray:
    """A[i, j] = 1 where P(L_j | L_i) >= tau, off the diagonal; the diagonal and undefined (NaN) P are 0."""
    if not in_range("tau", tau):
        raise ValueError(f"tau must lie in {RANGES['tau']}, got {tau}")
    adjacency = (np.asarray(conditional, dtype=np.float64) >= tau).astype(np.float64)
    np.fill_diagonal(adjacency, 0.0)
    return adjacency


def reweight(binary: np.ndarray, p: float = DEFAULT_P) -> np.ndarray:
    """Off-diagonal entries of each row scaled to sum to `p`, diagonal 1 - p (1 for a row with no neighbour)."""
    if not in_range("p", p):
        raise ValueError(f"p must lie in {RANGES['p']}, got {p}")
    binary = np.asarray(binary, dtype=np.float64).copy()
    np.fill_diagonal(binary, 0.0)
    degree = binary.sum(axis=1, keepdims=True)
    has_neighbours = degree[:, 0] > 0
    weighted = np.where(degree > 0, binary * p / np.maximum(degree, 1e-12), 0.0)
    weighted[np.diag_indices_from(weighted)] = np.where(has_neighbours, 1.0 - p, 1.0)
    return weighted


def normalise_adjacency(adjacency: np.ndarray) -> np.ndarray:
    """D^-1/2 A D^-1/2 with D the row sums of A (rows summing to 0 stay 0)."""
    adjacency = np.asarray(adjacency, dtype=np.float64)
    degree = adjacency.sum(axis=1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0)
    return adjacency * scale[:, None] * scale[None, :]


def adjacency_from_conditional(conditional: np.ndarray, tau: float = DEFAULT_TAU, p: float = DEFAULT_P) -> np.ndarray:
    """Steps 2-4 of the ML-GCN matrix from conditional probabilities."""
    return normalise_adjacency(reweight(binarise(conditional, tau), p))


def gcn_adjacency(labels: np.ndarray, tau: float = DEFAULT_TAU, p: float = DEFAULT_P) -> np.ndarray:
    """The normalised ML-GCN correlation matrix (classes x classes) of a training label matrix."""
    return adjacency_from_conditional(conditional_probabilities(labels), tau, p)
