"""Ensembles of run folders, k-fold folders and prediction tables: what `cxrlt ensemble` does.

A member is a run folder (its test predictions; its validation predictions
and labels), a k-fold folder (its merged test predictions; its out-of-fold
predictions and labels as validation) or a prediction CSV (with its
validation table when given). Folder files are found through `cxrlt.layout`;
validation labels are the ones a folder saved beside its predictions (for
folders written before runs saved labels, they come from the data sources).

The members are merged per image and class (`cxrlt.ensemble.combine`). With
test labels, every member and the ensemble are scored by the scoring core;
the ensemble's report, a `metrics.json` like any run's, is written beside the
ensemble table (`cxrlt.layout.EnsembleFiles`). Its F1 thresholds are tuned
on the members' validation predictions, ensembled the same way, when every
member has them for the same images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cxrlt.ensemble.combine import Selection, classwise_ensemble, classwise_selection, mean_ensemble
from cxrlt.errors import ConfigError, InputError
from cxrlt.evaluation.metrics import UndefinedMetricWarning
from cxrlt.evaluation.predictions import ClassTable, align, read_label_csv, read_predictions, write_predictions
from cxrlt.evaluation.scoring import Scores, score_predictions
from cxrlt.evaluation.tables import TableScores, TableScoring, Validation, score_table
from cxrlt.io import check_output, write_json
from cxrlt.layout import EnsembleFiles, KFoldFiles, RunFiles
from cxrlt.runs.folder import RunFolder


@dataclass(frozen=True)
class Member:
    """Where one member's test and validation predictions are, and the validation labels a folder saved.

    `val` is None for a prediction CSV given without a validation table;
    `val_labels` is None for a CSV member.
    """

    path: Path
    test: Path
    val: Path | None = None
    val_labels: Path | None = None

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    def validation_labels(self) -> ClassTable:
        """A folder member's validation labels: the saved file, else (older folders) from the data sources."""
        if self.val_labels is not None and self.val_labels.is_file():
            return read_label_csv(self.val_labels)
        if KFoldFiles(self.path).state.is_file():
            from cxrlt.runs.kfold import oof_labels

            return oof_labels(self.path)
        from cxrlt.training.data import load_run_data

        part = load_run_data(RunFolder(self.path).load_config()).part("val")
        return ClassTable(part.meta["image_id"].astype(str).to_numpy(dtype=object), tuple(part.classes), part.labels,
                          RunFiles(self.path).config)


def folder_member(folder: Path) -> Member:
    """The test and validation predictions and validation labels of a run folder or k-fold folder."""
    kfold, run = KFoldFiles(folder), RunFiles(folder)
    if kfold.state.is_file():
        member = Member(folder, kfold.predictions, kfold.oof_predictions, kfold.oof_labels)
    elif run.config.is_file():
        headline = RunFolder(folder).load_config().evaluation.split
        member = Member(folder, run.predictions("test", headline), run.predictions("val", headline),
                        run.labels("val", headline))
    else:
        raise InputError(f"neither a run folder ({run.CONFIG}) nor a k-fold folder ({kfold.STATE})", folder)
    if not member.test.is_file():
        raise InputError(f"has no test predictions ({member.test.name}); run `cxrlt evaluate {folder} --split test` "
                         "first", folder)
    return member


def resolve_members(paths: Sequence[Path], val: Sequence[Path] | None = None) -> list[Member]:
    """Members from folders and prediction CSVs; `val` gives the CSV members' validation tables, in order."""
    csv_members = [p for p in paths if not Path(p).is_dir()]
    if val is not None and len(val) != len(csv_members):
        raise ConfigError(f"--val gives {len(val)} tables for {len(csv_members)} CSV member(s); give one per CSV "
                          "member")
    csv_vals = iter(val or [])
    return [folder_member(Path(p)) if Path(p).is_dir() else Member(Path(p), Path(p), next(csv_vals, None))
            for p in paths]


@dataclass
class EnsembleResult:
    """The ensemble table, the class-wise selection, and with test labels the scores of members and ensemble."""

    predictions: ClassTable
    selection: Selection | None = None
    member_scores: dict[str, Scores] = field(default_factory=dict)
    scored: TableScores | None = None
    warnings: list[str] = field(default_factory=list)

    def score_lines(self) -> list[str]:
        """One line per member and the ensemble: mean AUC and mean AP on the test labels."""
        scores = {**self.member_scores, "ensemble": self.scored.scores} if self.scored else self.member_scores
        width = max(len(name) for name in scores)
        return [f"{name:<{width}}  " + "  ".join("n/a" if (v := s.metrics["mean"][key]) is None else f"{v:.4f}"
                                                  for key in ("auc", "ap")) for name, s in scores.items()]


def build_ensemble(paths: Sequence[Path], out: Path, *, method: str = "mean", val: Sequence[Path] | None = None,
                   labels_val: Path | None = None, top_k: int = 1, metric: str = "ap", merge: str = "arithmetic",
                   labels: Path | None = None, scoring: TableScoring = TableScoring(),
                   progress: bool = False) -> EnsembleResult:
    """Combine the members' test tables into `out` (`method`: mean, geometric or classwise) and score it on `labels`."""
    if len(paths) < 2:
        raise ConfigError("an ensemble needs two or more members")
    out, files = Path(out), EnsembleFiles(Path(out))
    inputs = [*paths, *(val or []), labels, labels_val]
    check_output(out, "--out", inputs=inputs)
    if method == "classwise":
        check_output(files.selection, "--out (its selection file)", inputs=inputs)
    if labels is not None:
        check_output(files.metrics, "--out (its metrics file)", inputs=inputs)
    members = resolve_members(paths, val)
    names = [str(p) for p in paths]
    tests = [read_predictions(m.test, scoring.id_column) for m in members]
    validation, reason = _validation(members, labels_val, scoring.id_column, required=method == "classwise",
                                     wanted=labels is not None)
    selection, caught = None, []
    if method == "classwise":
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", UndefinedMetricWarning)
            selection = classwise_selection(validation[0], validation[1], top_k, metric, names)
        caught = [str(w.message) for w in record]
    combine = _combiner(method, selection, merge)
    result = combine(tests)
    ensembled = EnsembleResult(ClassTable(result.ids, result.classes, result.values, out), selection, warnings=caught)
    write_predictions(out, result.ids, result.classes, result.values)
    if selection is not None:
        write_json(files.selection, selection.to_dict())
    if labels is not None:
        description: dict[str, Any] = {"method": method, "members": names}
        if selection is not None:
            description.update(top_k=top_k, metric=metric, merge=merge)
        tuning = None if validation is None else Validation(combine(validation[0]), validation[1], "val")
        _score(ensembled, tests, names, members, read_label_csv(labels, scoring.id_column), scoring, tuning, reason,
               description, progress)
        write_json(files.metrics, ensembled.scored.scores.metrics)
    return ensembled


def _combiner(method: str, selection: Selection | None, merge: str) -> Callable[[Sequence[ClassTable]], ClassTable]:
    """How tables are merged: by the class-wise `selection`, else every member by the mean of `method`."""
    if selection is not None:
        return lambda tables: classwise_ensemble(tables, selection, merge)
    return lambda tables: mean_ensemble(tables, "geometric" if method == "geometric" else "arithmetic")


def _validation(members: list[Member], labels_val: Path | None, id_column: str | None, required: bool,
                wanted: bool) -> tuple[tuple[list[ClassTable], ClassTable] | None, str | None]:
    """(the members' validation tables and their labels, None) or (None, why there are none).

    When `required` (class-wise selection) a missing piece is an error; when
    not even `wanted`, nothing is read.
    """
    if not (required or wanted):
        return None, None
    folders = [m for m in members if m.is_folder]
    if any(m.val is None for m in members):
        if required:
            raise ConfigError("--method classwise needs a validation table per member: give --val for the CSV members")
        return None, "a CSV member has no validation table (--val)"
    missing = [str(m.val) for m in members if not m.val.is_file()]
    if missing:
        if required:
            raise InputError(f"validation predictions not found: {', '.join(missing)}")
        return None, f"validation predictions not found: {', '.join(missing)}"
    if labels_val is None and not folders:
        if required:
            raise ConfigError("--method classwise needs validation labels: give --labels-val")
        return None, "no validation labels (--labels-val)"
    tables = [read_predictions(m.val, id_column) for m in members]
    if not required and any(len(t) != len(tables[0]) or set(t.ids) != set(tables[0].ids) for t in tables):
        return None, "the members' validation predictions are not of the same images"
    return (tables, read_label_csv(labels_val, id_column) if labels_val is not None
            else folders[0].validation_labels()), None


def _score(ensembled: EnsembleResult, tests: list[ClassTable], names: list[str], members: list[Member],
           labels: ClassTable, scoring: TableScoring, validation: Validation | None, reason: str | None,
           description: dict[str, Any], progress: bool) -> None:
    """Every member's test means, and the ensemble's full report (thresholds tuned on `validation`)."""
    for name, table in zip(names, tests):
        aligned = align(table, labels)
        ensembled.member_scores[name] = score_predictions(aligned.labels, aligned.probs, aligned.classes,
                                                          split="test")
    ensembled.scored = score_table(ensembled.predictions, labels, scoring, split="test", validation=validation,
                                   group_sources=[m.test for m in members], extras={"ensemble": description},
                                   progress=progress)
    if validation is None:
        ensembled.scored.notes.insert(0, f"no F1 at tuned thresholds: {reason}")
