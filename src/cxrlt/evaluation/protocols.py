"""The CXR-LT challenge evaluations as named protocols: label space, ranking metric, head / medium / tail split.

| name | classes | ranking | also reported | head / medium / tail |
|---|---|---|---|---|
| `cxr-lt-2023` | the 26 of CXR-LT 2023 | mAP | mAUC, mF1 at 0.5 | top 9 / middle 8 / bottom 9 by training positives (seed 002, Table 1) |
| `cxr-lt-2024-task1` | the 40 of CXR-LT 2024 task 1 | mAP | mAUC, mF1 at 0.5 | our rule: a third each, 13 / 14 / 13 by training positives |
| `cxr-lt-2024-zero-shot` | the 5 unseen classes of CXR-LT 2024 | mAP | mAUC, mF1 at 0.5 | none: every class is unseen in training |

mAP is the challenges' ranking metric; mF1 is F1 at a decision threshold
of 0.5 for every class, averaged (seed 003, "calculated using a decision
threshold of 0.5 for each class"). The zero-shot classes have no training
positives, so no frequency split; they are scored from their names by a
query-decoder head (`cxrlt predict --classes`, `cxrlt.models.class_scoring`).
The class lists are `cxrlt.labels`' label spaces, their official order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import CXRLT2023, CXRLT2024, CXRLT2024_ZERO_SHOT, canonical_key


@dataclass(frozen=True)
class Protocol:
    """A named challenge evaluation: its classes in official order, how it ranks, how it splits classes."""

    name: str
    title: str
    classes: tuple[str, ...]
    groups: tuple[int, int] | None  # head and tail class counts; None: no frequency split
    ranking_metric: str = "mAP"
    f1_threshold: float = 0.5

    def order(self, classes: Sequence[str], where: str) -> list[int]:
        """Column index of each official class in `classes` (any spelling, any order); InputError if they differ."""
        index = {canonical_key(c): j for j, c in enumerate(classes)}
        missing = [c for c in self.classes if canonical_key(c) not in index]
        official = {canonical_key(c) for c in self.classes}
        extra = [c for c in classes if canonical_key(c) not in official]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks {len(missing)} of its {len(self.classes)} classes ({', '.join(missing[:8])}"
                             f"{', ...' if len(missing) > 8 else ''})")
            if extra:
                parts.append(f"has {len(extra)} class(es) outside it ({', '.join(extra[:8])}"
                             f"{', ...' if len(extra) > 8 else ''})")
            raise InputError(f"{where} does not match the {self.title} label space: {'; '.join(parts)}")
        return [index[canonical_key(c)] for c in self.classes]

    def summary(self, result: Any) -> dict[str, Any]:
        """The report's `protocol` section from a `MetricResult` over this protocol's classes."""
        if result.threshold != self.f1_threshold:
            raise ValueError(f"{self.title} reports F1 at {self.f1_threshold}, not {result.threshold}")
        defined = result.defined
        mean = {k: float(np.mean(v[defined])) if defined.any() else None
                for k, v in (("mAP", result.ap), ("mAUC", result.auc), ("mF1", result.f1))}
        return {"name": self.name, "title": self.title, "classes": len(self.classes),
                "evaluated": int(defined.sum()), "ranking_metric": self.ranking_metric,
                "ranking": mean[self.ranking_metric], "metrics": mean, "f1_threshold": self.f1_threshold,
                "split": None if self.groups is None else {"head": self.groups[0], "tail": self.groups[1],
                                                           "medium": len(self.classes) - sum(self.groups)}}


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("cxr-lt-2023", "CXR-LT 2023", CXRLT2023, (9, 9)),
        Protocol("cxr-lt-2024-task1", "CXR-LT 2024 task 1", CXRLT2024, (13, 13)),
        Protocol("cxr-lt-2024-zero-shot", "CXR-LT 2024 zero-shot task", CXRLT2024_ZERO_SHOT, None),
    )
}


def get_protocol(name: str) -> Protocol:
    """A protocol by name (`PROTOCOLS`)."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown evaluation protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}") from None


SUBMISSION_ID = "dicom_id"  # the CXR-LT submissions key images by MIMIC-CXR's dicom_id


def write_submission(path: Any, table: Any, protocol: Protocol, id_column: str = SUBMISSION_ID) -> Any:
    """Write the challenge CSV of a prediction table (`ClassTable`): one row per image, the official columns.

    The id column is renamed `id_column`; the class columns are the
    protocol's, spelled and ordered as the challenge lists them. A table
    missing a class, or holding one outside the protocol, is refused.
    """
    from cxrlt.evaluation.predictions import write_predictions

    columns = protocol.order(table.classes, f"the prediction table {table.name}")
    return write_predictions(path, table.ids, protocol.classes, table.values[:, columns], id_column=id_column)
