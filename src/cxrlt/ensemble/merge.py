"""Merging several predictions of the same images: arithmetic or geometric mean.

The same two rules merge test-time augmentation views (`cxrlt.inference.tta`),
k-fold models (`cxrlt.runs.kfold`) and the members of an ensemble of
prediction tables (`cxrlt.ensemble.combine`), per image and per class:

`arithmetic`
    The mean of the probabilities, mean_m p_m.
`geometric`
    The renormalised geometric mean of the members' Bernoulli distributions
    (p, 1 - p): with g1 = exp(mean_m log p_m) and g0 = exp(mean_m log(1 - p_m)),
    the merged probability is g1 / (g1 + g0), which equals sigmoid(mean_m z_m),
    the sigmoid of the mean logit z = log(p / (1 - p)).

Why not exp(mean log p) alone: it treats "present" and "absent" differently
(merging the probabilities of absence the same way would not give one minus
it) and never exceeds the arithmetic mean, so it shrinks every probability
and is not even a probability of the same event as its inputs. The
renormalised form is symmetric, is the product-of-experts rule of
probability theory, and for sigmoid outputs is simply logit averaging.

When merging stored probabilities (prediction tables), p is clipped to
[EPS, 1 - EPS] first, so that one member saying exactly 0 or 1 (a float32
sigmoid saturates at |z| > 17) does not decide the merge alone.
"""

from __future__ import annotations

import numpy as np
import torch

from cxrlt.errors import ConfigError

MERGES = ("arithmetic", "geometric")
EPS = 1e-7  # about the float32 resolution just below 1


def check_merge(method: str) -> str:
    """`method` if it is a known merge rule (arithmetic, geometric), else ConfigError."""
    if method not in MERGES:
        raise ConfigError(f"unknown merge {method!r}; choose arithmetic or geometric")
    return method


def merge_logits(logits: torch.Tensor, method: str = "arithmetic", dim: int = 1) -> torch.Tensor:
    """Merge logits along `dim` (default: (batch, views, classes) -> (batch, classes)) into probabilities."""
    check_merge(method)
    logits = logits.float()
    if method == "geometric":
        return torch.sigmoid(logits.mean(dim=dim))
    return torch.sigmoid(logits).mean(dim=dim)


def merge_probabilities(probs: np.ndarray, method: str = "arithmetic", axis: int = 0) -> np.ndarray:
    """Merge probabilities along `axis` (default: (members, images, classes) -> (images, classes)).

    Computed in float64; `geometric` clips to [EPS, 1 - EPS] (see module doc).
    """
    check_merge(method)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[axis] == 0:
        raise ValueError("nothing to merge: no members")
    if method == "arithmetic":
        return probs.mean(axis=axis)
    clipped = np.clip(probs, EPS, 1.0 - EPS)
    mean_logit = (np.log(clipped) - np.log1p(-clipped)).mean(axis=axis)
    return 1.0 / (1.0 + np.exp(-mean_logit))
