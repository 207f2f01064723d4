"""Ensembles of prediction tables: model-wise mean and class-wise selection.

Members are prediction tables (`cxrlt.evaluation.predictions`) of the same
images and classes, made by different models. Rows are matched by image id
and columns by class name (canonical spelling); both sets must be equal,
otherwise the ensemble is refused with a message naming the two files and
what differs. Output rows and columns follow the first member.

Model-wise (`mean_ensemble`): every member counts, merged per image and class
by the arithmetic mean of probabilities or the geometric rule of
`cxrlt.ensemble.merge` (sigmoid of the mean logit).

Class-wise (`classwise_selection` + `classwise_ensemble`, seed 004): for each
class, the `top_k` members with the best validation score for that class
(average precision by default, or ROC AUC) are merged, so each class can use
a different subset of models. Scores come from each member's validation
table against validation labels; ties keep the earlier member. A class whose
validation score is undefined (no positive or no negative label) uses all
members, and the selection says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from cxrlt.ensemble.merge import check_merge, merge_probabilities
from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.metrics import UndefinedMetricWarning, compute_metrics
from cxrlt.evaluation.predictions import ClassTable, align, match_tables, quote_examples
from cxrlt.labels import canonical_key

Metric = Literal["ap", "auc"]


def stack_tables(tables: Sequence[ClassTable]) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """(ids, classes, values) with values (members x images x classes), aligned to the first table.

    InputError when a table's classes or image ids differ from the first's.
    """
    if not tables:
        raise InputError("an ensemble needs at least one prediction table")
    first = tables[0]
    stacked = np.empty((len(tables), len(first), len(first.classes)), dtype=np.float64)
    for m, table in enumerate(tables):
        rows, columns = match_tables(first, table, "ensemble members must predict the same images (the same split "
                                     "of the same data) and the same label space")
        stacked[m] = table.values[rows][:, columns]
    return first.ids, first.classes, stacked


def mean_ensemble(tables: Sequence[ClassTable], merge: str = "arithmetic") -> ClassTable:
    """Model-wise ensemble: every member merged per image and class by `merge` (arithmetic, geometric)."""
    check_merge(merge)
    ids, classes, values = stack_tables(tables)
    return ClassTable(ids, classes, merge_probabilities(values, merge, axis=0))


@dataclass(frozen=True)
class Selection:
    """Which members a class-wise ensemble uses for each class.

    `scores` (members x classes): validation score of each member per class
    (NaN when undefined); `members[j]`: indices of the members used for class
    j, best first; `fallback[j]`: True when class j used all members because
    its score was undefined.
    """

    classes: tuple[str, ...]
    names: tuple[str, ...]
    metric: str
    top_k: int
    scores: np.ndarray
    members: tuple[tuple[int, ...], ...]
    fallback: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready: per class, the chosen members with their validation scores."""
        return {
            "metric": self.metric,
            "top_k": self.top_k,
            "members": list(self.names),
            "per_class": {
                name: {
                    "selected": [self.names[m] for m in chosen],
                    "scores": {self.names[m]: _finite(self.scores[m, j]) for m in range(len(self.names))},
                    "all_members_because_undefined": bool(self.fallback[j]),
                }
                for j, (name, chosen) in enumerate(zip(self.classes, self.members))
            },
        }

    def format_table(self) -> str:
        """One line per class: the chosen members and their validation scores."""
        width = max(len(c) for c in self.classes)
        lines = [f"{'class':<{width}}  selected members (validation {self.metric.upper()})"]
        for j, (name, chosen) in enumerate(zip(self.classes, self.members)):
            if self.fallback[j]:
                text = f"all {len(chosen)} (score undefined: no positive or no negative label)"
            else:
                text = ", ".join(f"{self.names[m]} {self.scores[m, j]:.4f}" for m in chosen)
            lines.append(f"{name:<{width}}  {text}")
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def member_scores(val_tables: Sequence[ClassTable], labels: ClassTable, metric: Metric = "ap") -> np.ndarray:
    """Validation score (members x classes) of each member per class, classes as in the first table."""
    if metric not in ("ap", "auc"):
        raise ConfigError(f"unknown selection metric {metric!r}; choose ap or auc")
    ids, classes, values = stack_tables(val_tables)
    aligned = align(ClassTable(ids, classes, values[0], val_tables[0].path, val_tables[0].id_column), labels)
    scores = np.empty((len(val_tables), len(classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for m in range(len(val_tables)):
            result = compute_metrics(aligned.labels, values[m], classes)
            scores[m] = result.ap if metric == "ap" else result.auc
    return scores


def classwise_selection(val_tables: Sequence[ClassTable], labels: ClassTable, top_k: int,
                        metric: Metric = "ap", names: Sequence[str] | None = None) -> Selection:
    """For each class, the `top_k` members best on validation for that class (see module doc)."""
    if not 1 <= top_k <= len(val_tables):
        raise ConfigError(f"top_k must be between 1 and the number of members ({len(val_tables)}), got {top_k}")
    names = tuple(names) if names is not None else tuple(t.name for t in val_tables)
    scores = member_scores(val_tables, labels, metric)
    chosen, fallback = [], np.zeros(scores.shape[1], dtype=bool)
    for j in range(scores.shape[1]):
        column = scores[:, j]
        if not np.isfinite(column).all():
            fallback[j] = True
            chosen.append(tuple(range(len(val_tables))))
            continue
        order = np.argsort(-column, kind="stable")  # stable: ties keep the earlier member
        chosen.append(tuple(int(m) for m in order[:top_k]))
    if fallback.any():
        warnings.warn(
            f"validation {metric.upper()} is undefined for {int(fallback.sum())} class(es) "
            f"({quote_examples([val_tables[0].classes[j] for j in np.flatnonzero(fallback)])}): they use all members",
            UndefinedMetricWarning, stacklevel=2,
        )
    return Selection(tuple(val_tables[0].classes), names, metric, top_k, scores, tuple(chosen), fallback)


def classwise_ensemble(test_tables: Sequence[ClassTable], selection: Selection,
                       merge: str = "arithmetic") -> ClassTable:
    """Merge, for each class, only the members `selection` chose for it."""
    check_merge(merge)
    if len(test_tables) != len(selection.names):
        raise InputError(f"{len(test_tables)} test tables for a selection over {len(selection.names)} members")
    ids, classes, values = stack_tables(test_tables)
    column = {canonical_key(c): j for j, c in enumerate(classes)}
    if set(column) != {canonical_key(c) for c in selection.classes}:
        raise InputError(
            f"the test tables' classes ({quote_examples(classes)}) differ from the validation tables' "
            f"({quote_examples(selection.classes)}); each member's validation and test tables must share classes"
        )
    merged = np.empty(values.shape[1:])
    for name, chosen in zip(selection.classes, selection.members):
        j = column[canonical_key(name)]
        merged[:, j] = merge_probabilities(values[list(chosen), :, j], merge, axis=0)
    return ClassTable(ids, classes, merged)
