"""Scoring options shared by `cxrlt evaluate`, `cxrlt compare` and `cxrlt ensemble`: groups, thresholds, bootstrap."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxrlt.evaluation.tables import GroupOptions, TableScoring


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


def group_options(args: argparse.Namespace) -> "GroupOptions":
    """The options of `add_group_arguments`."""
    from cxrlt.evaluation.tables import GroupOptions

    return GroupOptions(args.groups_from, args.group_method, args.head, args.tail, args.head_min, args.tail_max)


def add_threshold_method_arguments(group: argparse._ArgumentGroup) -> None:
    """--threshold-method and --target-sensitivity: how per-class thresholds are tuned on validation."""
    group.add_argument("--threshold-method", choices=("max_f1", "sensitivity"), default="max_f1",
                       help="max_f1: maximise validation F1; sensitivity: highest threshold reaching "
                            "--target-sensitivity")
    group.add_argument("--target-sensitivity", type=float, default=0.9, metavar="S",
                       help="for --threshold-method sensitivity (default: 0.9)")


def add_bootstrap_arguments(group: argparse._ArgumentGroup) -> None:
    """--bootstrap, --patients, --level and --seed: percentile bootstrap intervals."""
    group.add_argument("--bootstrap", type=int, default=0, metavar="N",
                       help="bootstrap resamples for confidence intervals (default: 0, none; 1000 is usual)")
    group.add_argument("--patients", metavar="COL",
                       help="patient id column of the label file (or of --metadata): resample patients, not images")
    group.add_argument("--level", type=float, default=0.95, help="interval level (default: 0.95)")
    group.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")


def scoring_options(args: argparse.Namespace, threshold: float = 0.5) -> "TableScoring":
    """The options of `add_group_arguments`, `add_threshold_method_arguments` and `add_bootstrap_arguments`."""
    from cxrlt.errors import ConfigError
    from cxrlt.evaluation.scoring import BootstrapSettings
    from cxrlt.evaluation.tables import TableScoring

    if not 0 < args.target_sensitivity <= 1:
        raise ConfigError(f"--target-sensitivity must lie in (0, 1], got {args.target_sensitivity}")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be 0 (no intervals) or a number of resamples, got {args.bootstrap}")
    if not 0 < args.level < 1:
        raise ConfigError(f"--level must lie in (0, 1), e.g. 0.95; got {args.level}")
    if args.patients is not None and args.bootstrap == 0:
        raise ConfigError("--patients only chooses what the bootstrap resamples: give --bootstrap N too")
    return TableScoring(args.id_column, threshold, args.threshold_method, args.target_sensitivity,
                        BootstrapSettings(args.bootstrap, args.seed, args.level) if args.bootstrap else None,
                        args.patients, group_options(args), **evaluation_options(args))


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """--protocol, --metadata, --subgroups, --age-bands, --min-subgroup, --aggregate, --study-merge, --study-column."""
    from cxrlt.evaluation.protocols import PROTOCOLS
    from cxrlt.evaluation.studies import AGGREGATIONS

    parser.add_argument("--protocol", choices=tuple(PROTOCOLS),
                        help="score as a CXR-LT challenge task: its classes, ranking metric (mAP), mAUC, mF1 at 0.5 "
                             "and head / medium / tail split")
    extra = parser.add_argument_group("subgroups and studies")
    extra.add_argument("--metadata", metavar="M.csv", type=Path,
                       help="table keyed by image id with sex / age / view / source, study and patient columns "
                            "(default: the label file; NIH's Data_Entry_2017 works as it is)")
    extra.add_argument("--subgroups", metavar="LIST",
                       help="score per subgroup of these attributes, e.g. sex,age,view (also source)")
    extra.add_argument("--age-bands", metavar="EDGES", default="20,40,60,80",
                       help="age band edges in years (default: 20,40,60,80 -> 0-20, ..., 80+)")
    extra.add_argument("--min-subgroup", type=int, default=20, metavar="N",
                       help="subgroups with fewer images are reported too small to score (default: 20)")
    extra.add_argument("--aggregate", choices=("image", "study"), default="image",
                       help="study: merge the predictions of a study's images and score studies (default: image)")
    extra.add_argument("--study-merge", choices=AGGREGATIONS, default="max",
                       help="how a study's image predictions merge (default: max)")
    extra.add_argument("--study-column", metavar="COL",
                       help="study id column of the metadata (default: study_id, StudyInstanceUID or study)")


def evaluation_options(args: argparse.Namespace) -> dict:
    """The TableScoring fields of `add_evaluation_arguments` (defaults when a command lacks them)."""
    from cxrlt.errors import ConfigError
    from cxrlt.evaluation.metadata import check_age_edges, parse_attributes
    from cxrlt.evaluation.subgroups import SubgroupSettings

    subgroups = None
    if getattr(args, "subgroups", None):
        try:
            edges = [float(e) for e in args.age_bands.split(",") if e.strip()]
        except ValueError:
            raise ConfigError(f"--age-bands takes numbers separated by commas, e.g. 20,40,60,80; got "
                              f"{args.age_bands!r}") from None
        if args.min_subgroup < 1:
            raise ConfigError(f"--min-subgroup must be at least 1, got {args.min_subgroup}")
        subgroups = SubgroupSettings(parse_attributes(args.subgroups), check_age_edges(edges), args.min_subgroup)
    aggregate = getattr(args, "aggregate", "image")
    return {"metadata": getattr(args, "metadata", None), "subgroups": subgroups,
            "aggregate": args.study_merge if aggregate == "study" else None,
            "study_column": getattr(args, "study_column", None), "protocol": getattr(args, "protocol", None)}
