"""Scoring a prediction table against a label file: what `cxrlt evaluate` and `cxrlt ensemble` report.

The table is matched to its labels by image id and class name
(`cxrlt.evaluation.predictions.align`); per-class thresholds, and a
temperature when asked for, are fitted on validation predictions with their
labels; head / medium / tail groups come from training positives
(`GroupOptions`); the bootstrap resamples patients when the label file's
patient id column is named. The report is the scoring core's
(`cxrlt.evaluation.scoring`), the schema of every `metrics.json`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrlt.errors import ConfigError, InputError
from cxrlt.data.stats import class_groups
from cxrlt.evaluation.groups import training_positives
from cxrlt.evaluation.predictions import ClassTable, align, read_label_csv, read_predictions
from cxrlt.evaluation.scoring import BootstrapSettings, Scores, Tuning, score_predictions
from cxrlt.evaluation.subgroups import SubgroupSettings
from cxrlt.labels import canonical_key


@dataclass(frozen=True)
class GroupOptions:
    """Where head / medium / tail come from and how they are cut (`cxrlt.evaluation.groups.class_groups`).

    `groups_from` is a training label file or a run folder / `model.json`;
    without it, the training positives saved with the run of the scored
    predictions; without those, the evaluated labels.
    """

    groups_from: Path | None = None
    method: str = "rank"
    head: int = 0
    tail: int = 0
    head_min: int = 1000
    tail_max: int = 100

    def resolve(self, classes: Sequence[str], predictions: Sequence[Path], evaluated_positives: np.ndarray,
                id_column: str | None = None) -> tuple[list[str], np.ndarray | None, str]:
        """(group per class, training positives or None, a note saying where the groups came from)."""
        for flag, value in (("--head", self.head), ("--tail", self.tail)):
            if value < 0:
                raise ConfigError(f"{flag} must be 0 (the label space's default) or a number of classes, got {value}")
        train, note = training_positives(classes, self.groups_from, predictions, id_column)
        try:
            groups = class_groups(evaluated_positives if train is None else train, self.method, self.head,
                                  self.tail, self.head_min, self.tail_max, classes=classes)
        except ValueError as exc:
            raise ConfigError(f"--head / --tail: {exc}") from None
        return groups, train, note


@dataclass(frozen=True)
class TableScoring:
    """How a prediction table is scored: ids, F1 thresholds, bootstrap, patients and groups.

    `threshold` is the fixed F1 threshold (and the one a class without a
    validation positive keeps when thresholds are tuned); `patients` names
    the patient id column of the metadata table. `metadata` is the table
    (keyed by image id) holding patients, study ids and subgroup columns
    (default: the label file). `subgroups` scores per subgroup; `aggregate`
    (`max`, `mean`, `logit_mean`) merges images into studies (by
    `study_column`, else found by name) before scoring; `protocol` names a
    CXR-LT evaluation (`cxrlt.evaluation.protocols`).
    """

    id_column: str | None = None
    threshold: float = 0.5
    threshold_method: str = "max_f1"
    target_sensitivity: float = 0.9
    bootstrap: BootstrapSettings | None = None
    patients: str | None = None
    grouping: GroupOptions = field(default_factory=GroupOptions)
    metadata: Path | None = None
    subgroups: SubgroupSettings | None = None
    aggregate: str | None = None
    study_column: str | None = None
    protocol: str | None = None


@dataclass(frozen=True)
class Validation:
    """Validation predictions and their labels, to tune thresholds (and a temperature) on; `name` for the report."""

    predictions: ClassTable
    labels: ClassTable
    name: str


@dataclass
class TableScores:
    """A scored table: the report and tables (`scores`), notes on where things came from, warnings to show."""

    scores: Scores
    notes: list[str]
    warnings: list[str]


def read_validation(predictions: Path, labels: Path, id_column: str | None = None,
                    allow_missing_classes: bool = False) -> Validation:
    """A validation prediction table and its label file (the label file may not hold unpredicted classes)."""
    table = read_predictions(predictions, id_column)
    return Validation(table, read_label_csv(labels, id_column, table.classes, allow_missing_classes),
                      str(predictions))


def score_table(predictions: ClassTable, labels: ClassTable, options: TableScoring, *, split: str | None,
                validation: Validation | None = None, temperature: bool = False, group_sources: Sequence[Path] = (),
                extras: dict[str, Any] | None = None, progress: bool = False) -> TableScores:
    """Score `predictions` against `labels` into the metrics report.

    With `validation`, per-class thresholds are tuned on it
    (`options.threshold_method`) and, with `temperature`, a temperature is
    fitted on it. Groups follow `options.grouping`, looking for saved
    training positives beside `group_sources` (the prediction files).
    """
    data = align(predictions, labels)
    protocol = None
    if options.protocol is not None:
        from cxrlt.evaluation.predictions import Aligned
        from cxrlt.evaluation.protocols import get_protocol

        protocol = get_protocol(options.protocol)
        if options.threshold != protocol.f1_threshold:
            raise ConfigError(f"{protocol.title} reports F1 at {protocol.f1_threshold}: leave --threshold at its "
                              f"default, not {options.threshold}")
        columns = protocol.order(data.classes, f"the prediction table {predictions.name}")
        data = Aligned(data.ids, protocol.classes, data.probs[:, columns], data.labels[:, columns])
    if options.aggregate is not None and validation is not None:
        raise ConfigError("study-level scoring of prediction tables does not tune thresholds: the validation "
                          "tables would need merging into studies too; score without --val-predictions, or "
                          "aggregate a run folder (thresholds tuned per image on validation)")
    classes = list(data.classes)
    notes: list[str] = []
    thresholds, tuning, fitted = None, None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if validation is not None:
            thresholds, fitted = _tune(validation, classes, options, temperature, where=predictions.name)
            tuning = Tuning(options.threshold_method, validation.name, options.target_sensitivity)
            notes.append(f"thresholds tuned on {validation.name} ({options.threshold_method})")
            if fitted is not None:
                notes.append(f"temperature T = {fitted:.4g} fitted on {validation.name}")
    grouping = options.grouping
    if protocol is not None and protocol.groups is not None and not (grouping.head or grouping.tail):
        from dataclasses import replace

        grouping = replace(grouping, method="rank", head=protocol.groups[0], tail=protocol.groups[1])
    groups, train_positives, note = grouping.resolve(classes, group_sources, np.sum(data.labels == 1, axis=0),
                                                     options.id_column)
    if protocol is not None and protocol.groups is None:
        groups, note = None, f"no head / medium / tail split: {protocol.title} classes are unseen in training"
    notes.append(note)
    meta_path = options.metadata if options.metadata is not None else labels.path
    patients = None
    if options.patients is not None:
        from cxrlt.evaluation.predictions import read_patients

        patients = read_patients(meta_path, data.ids, options.patients, options.id_column)
    attributes = None
    if options.subgroups is not None:
        from cxrlt.evaluation.metadata import read_attributes

        attributes = read_attributes(meta_path, data.ids, options.subgroups.attributes, options.id_column,
                                     options.subgroups.age_edges)
    y, p, aggregate = data.labels, data.probs, None
    if options.aggregate is not None:
        from cxrlt.evaluation.studies import aggregate_studies, read_study_ids, study_attributes

        study_ids = read_study_ids(meta_path, data.ids, options.study_column, options.id_column)
        studies = aggregate_studies(study_ids, p, y, options.aggregate, patients)
        y, p, patients, aggregate = studies.labels, studies.probs, studies.patients, studies.summary()
        if attributes is not None:
            attributes = study_attributes(attributes, study_ids)
        notes.append(f"scored {len(studies.ids)} studies of {studies.n_images} images ({options.aggregate}); "
                     f"{studies.excluded_images} image(s) without a study id left out")
    scores = score_predictions(y, p, classes, split=split, groups=groups, thresholds=thresholds,
                               tuning=tuning, threshold=options.threshold, temperature=fitted,
                               bootstrap=options.bootstrap, patients=patients, extras=extras,
                               train_positives=train_positives, progress=progress, subgroups=attributes,
                               subgroup_min_images=options.subgroups.min_images if options.subgroups else 20,
                               aggregate=aggregate, protocol=protocol)
    return TableScores(scores, notes, [str(w.message) for w in caught] + scores.warnings)


def _tune(validation: Validation, classes: list[str], options: TableScoring, temperature: bool,
          where: str) -> tuple[np.ndarray, float | None]:
    """Per-class thresholds in the order of `classes`, and the temperature (or None), fitted on `validation`."""
    from cxrlt.evaluation.calibration import fit_temperature
    from cxrlt.evaluation.metrics import tune_thresholds

    val = align(validation.predictions, validation.labels)
    columns = _reorder(val.classes, classes, f"{validation.name} and {where}")
    thresholds = tune_thresholds(val.labels[:, columns], val.probs[:, columns], options.threshold_method,
                                 options.target_sensitivity, fallback=options.threshold, classes=classes)
    return thresholds, fit_temperature(val.labels, val.probs) if temperature else None


def _reorder(source: tuple[str, ...], target: list[str], where: str) -> list[int]:
    """Column indices putting `source` classes in `target` order."""
    index = {canonical_key(c): j for j, c in enumerate(source)}
    missing = [c for c in target if canonical_key(c) not in index]
    extra = len(source) - (len(target) - len(missing))
    if missing or extra:
        raise InputError(
            f"the validation and test prediction tables ({where}) must have the same classes; "
            f"validation lacks {missing or 'none'} and has {extra} class(es) the test table lacks"
        )
    return [index[canonical_key(c)] for c in target]
