"""Head / medium / tail options shared by `cxrlt evaluate` and `cxrlt compare`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np


def add_group_arguments(parser: argparse.ArgumentParser) -> None:
    """The --groups-from, --group-method, --head, --tail, --head-min and --tail-max options."""
    groups = parser.add_argument_group(
        "head / medium / tail groups",
        "from training positives: --groups-from, else those saved with the run the predictions belong to "
        "(model.json beside them), else the evaluated labels (said in the output)")
    groups.add_argument("--groups-from", metavar="TRAIN", type=Path,
                        help="training label file (CSV) whose positives define the groups, or a run folder / "
                             "model.json whose saved training positives do")
    groups.add_argument("--group-method", choices=("rank", "count"), default="rank",
                        help="rank: the most / least frequent classes; count: thresholds on positives (default: rank)")
    groups.add_argument("--head", type=int, default=0, metavar="K",
                        help="rank: number of head classes (default: the label space's, e.g. 9 of CXR-LT 2023's 26; "
                             "else a third)")
    groups.add_argument("--tail", type=int, default=0, metavar="K",
                        help="rank: number of tail classes (default: as --head)")
    groups.add_argument("--head-min", type=int, default=1000, metavar="N",
                        help="count: head when positives >= N (default: 1000)")
    groups.add_argument("--tail-max", type=int, default=100, metavar="N",
                        help="count: tail when positives < N (default: 100)")


def resolve_groups(args: argparse.Namespace, classes: Sequence[str], predictions: Sequence[Path],
                   evaluated_positives: "np.ndarray") -> tuple[list[str], "np.ndarray | None", str]:
    """(groups, training positives or None, note on their source) from the options of `add_group_arguments`."""
    from cxrlt.data.stats import class_groups
    from cxrlt.errors import ConfigError
    from cxrlt.evaluation.groups import training_positives

    for flag, value in (("--head", args.head), ("--tail", args.tail)):
        if value < 0:
            raise ConfigError(f"{flag} must be 0 (the label space's default) or a number of classes, got {value}")
    train, note = training_positives(classes, args.groups_from, predictions, args.id_column)
    try:
        groups = class_groups(evaluated_positives if train is None else train, args.group_method, args.head,
                              args.tail, args.head_min, args.tail_max, classes=classes)
    except ValueError as exc:
        raise ConfigError(f"--head / --tail: {exc}") from None
    return groups, train, note
