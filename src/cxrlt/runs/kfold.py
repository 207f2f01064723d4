"""K-fold training: one model per patient-grouped, iteratively stratified fold.

`kfold(config, run_dir, folds)` keeps the test split of `config` (the
source's, or `data.split.test_fraction` of patients at random when the source
has none) and cuts the remaining images into `folds` folds with
`cxrlt.data.splits.iterative_stratified_group_kfold` (no patient spans two
folds). Model k is an ordinary run (`cxrlt.runs.train.train`) with
`data.split: {method: kfold, folds: K, fold: k}`: it trains on the other folds
and uses fold k as validation (best checkpoint, early stopping, thresholds).

Folder layout::

    RUN/kfold.yaml            the configuration every fold derives from
    RUN/kfold.json            folds, merge rule, and (when complete) summary scores
    RUN/folds/k/              the run of fold k (a normal run folder) + fold.json when finished
    RUN/predictions_oof.csv   out-of-fold predictions: every non-test image, by the model that did not train on it
    RUN/labels_oof.csv        their labels
    RUN/metrics_oof.json      their metrics (thresholds tuned on them)
    RUN/predictions.csv       test predictions: the fold models merged per image and class
    RUN/labels.csv            their labels
    RUN/metrics.json          their metrics, F1 at the out-of-fold thresholds

(names: `cxrlt.layout.KFoldFiles`). Both metrics files are reports of the
scoring core (`cxrlt.evaluation.scoring`), like a run's: groups from the
positives of the non-test images, thresholds and (with
`evaluation.temperature`) a temperature fitted on the out-of-fold
predictions, bootstrap intervals with `evaluation.bootstrap` resamples seeded
by `train.seed`, over patients.

Test predictions merge the fold models' probabilities by the arithmetic mean
(default; the "fold models are averaged" of seed 003) or by the geometric
rule of `cxrlt.ensemble.merge` (sigmoid of the mean logit). Out-of-fold
predictions of one model each are not merged. The out-of-fold scores are
slightly optimistic, as fold k also picked model k's best epoch.

Running again resumes: finished folds (with fold.json) are skipped, a fold
stopped part-way continues with `cxrlt.runs.train.resume`, and the merged
files are rewritten from the folds' files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cxrlt.config import RunConfig, load_config, parse_config
from cxrlt.data.stats import LabelStats
from cxrlt.ensemble.combine import stack_tables
from cxrlt.ensemble.merge import check_merge, merge_probabilities
from cxrlt.errors import ConfigError, InputError, Interrupted
from cxrlt.evaluation.calibration import fit_temperature
from cxrlt.evaluation.metrics import UndefinedMetricWarning, tune_thresholds
from cxrlt.evaluation.predictions import ClassTable, read_predictions, write_labels, write_predictions
from cxrlt.evaluation.scoring import OUT_OF_FOLD, BootstrapSettings, Scores, Tuning, score_predictions
from cxrlt.io import read_json, write_json, write_text
from cxrlt.layout import KFoldFiles
from cxrlt.ownership import is_writer, refuse_if_locked
from cxrlt.runs.finish import patient_ids
from cxrlt.runs.folder import KFoldFolder, RunFolder


@dataclass
class KFoldResult:
    """A finished k-fold run: per-fold, out-of-fold and test metrics, and a printable table."""

    run_dir: Path
    folds: list[dict[str, Any]]
    oof: dict[str, Any]
    test: dict[str, Any] | None
    table: str


def fold_config(config: RunConfig, folds: int, fold: int) -> RunConfig:
    """The run configuration of fold `fold` of `folds` (fold `fold` is validation; evaluation on test)."""
    raw = config.model_dump(mode="json")
    raw["name"] = f"{config.name}-fold{fold}"
    raw["data"]["split"].update(method="kfold", folds=folds, fold=fold)
    raw["evaluation"]["split"] = "test"
    return parse_config(raw, origin=f"fold {fold} of {config.name}")


def fold_dir(run_dir: Path, fold: int) -> Path:
    """Run folder of fold `fold`."""
    return KFoldFiles(run_dir).fold(fold).path


def kfold(config: RunConfig, run_dir: str | Path, folds: int = 5, merge: str = "arithmetic",
          progress: bool = True) -> KFoldResult | None:
    """Train (or resume) one model per fold in `run_dir`, then write out-of-fold and test predictions.

    A folder that already holds a k-fold run continues it when `config`,
    `folds` and `merge` are the ones it was started with, and is refused
    otherwise. In a multi-process launch the non-zero ranks train their
    shard of every fold and return None; rank 0 writes and combines.
    """
    from cxrlt.training.data import load_run_data
    from cxrlt.runs.train import check_start

    folder = KFoldFolder(Path(run_dir))
    run_dir = folder.path
    check_merge(merge)
    if folds < 2:
        raise ConfigError(f"k-fold needs at least 2 folds, got {folds}")
    if not is_writer():
        folder.attach()
        _train_folds(config, run_dir, folds, progress)
        return None
    refuse_if_locked(run_dir)
    text = config.to_yaml()
    started = folder.started
    if started:
        state = read_json(folder.state) if folder.state.is_file() else {}
        if folder.config.read_text(encoding="utf-8") != text or state.get("folds") != folds \
                or state.get("merge") != merge:
            raise ConfigError(
                f"{run_dir} holds a k-fold run with another configuration, number of folds or merge "
                f"(folds {state.get('folds')}, merge {state.get('merge')}); continue it with "
                f"`cxrlt kfold --resume {run_dir}` or choose another --out folder"
            )
    else:
        # Everything a start can get wrong fails before the folder is claimed.
        first = fold_config(config, folds, 0)
        check_start(first, load_run_data(first), RunFolder(fold_dir(run_dir, 0)))
    with folder.claim().lock("kfold"):
        if not started:
            write_json(folder.state, {"folds": folds, "merge": merge, "complete": False})
            write_text(folder.config, text)  # last: a folder with it is a started k-fold run
        _train_folds(config, run_dir, folds, progress)
        return combine_folds(run_dir, progress=progress)


def _train_folds(config: RunConfig, run_dir: Path, folds: int, progress: bool) -> None:
    """Train or resume every unfinished fold (every process of a multi-process launch runs this)."""
    from cxrlt.runs.train import resume, train

    files = KFoldFiles(run_dir)
    for k in range(folds):
        folder, done = files.fold(k).path, files.fold_done(k)
        if done.is_file():
            continue
        try:
            if RunFolder(folder).started:
                result = resume(folder, progress=progress)
            else:
                result = train(fold_config(config, folds, k), folder, progress=progress)
        except Interrupted as exc:
            raise Interrupted(f"fold {k} of {folds}: {exc} The k-fold run continues with `cxrlt kfold --resume "
                              f"{run_dir}`.") from None
        if result.metrics is None:
            continue  # not rank 0: rank 0 records the fold
        val = read_json(files.fold(k).metrics("val", "test"))
        summary = {"fold": k, "val": val["mean"], "test": result.metrics.metrics["mean"]
                   if result.metrics.split == "test" else None}
        write_json(done, summary)


def resume_kfold(run_dir: str | Path, progress: bool = True) -> KFoldResult:
    """Continue the k-fold run in `run_dir` with the configuration, folds and merge it was started with."""
    files = KFoldFiles(Path(run_dir))
    if not files.config.is_file() or not files.state.is_file():
        raise ConfigError(f"{files.path} is not a k-fold folder (no {files.CONFIG} / {files.STATE}); start one with "
                          "`cxrlt kfold CONFIG --folds K`")
    state = read_json(files.state)
    return kfold(load_config(files.config), files.path, state["folds"], state["merge"], progress)


def _pool_table(run_dir: Path):
    """The label table with splits of fold 0, and the mask of its non-test rows (the out-of-fold pool)."""
    from cxrlt.data.sources import load_table

    files = KFoldFiles(run_dir)
    state = read_json(files.state)
    config = fold_config(load_config(files.config), state["folds"], 0)
    table = load_table(config.data)
    return config, table, (table.meta["split"] != "test").to_numpy(dtype=bool)


def oof_labels(run_dir: str | Path) -> ClassTable:
    """Labels of the out-of-fold images of a k-fold folder, from its data sources (folders combined before
    k-fold runs saved `labels_oof.csv`)."""
    files = KFoldFiles(Path(run_dir))
    _, table, pool = _pool_table(files.path)
    part = table.subset(pool)
    return ClassTable(np.asarray(part.image_ids, dtype=object), tuple(part.classes), part.labels, files.config)


def combine_folds(run_dir: str | Path, progress: bool = True) -> KFoldResult:
    """Write out-of-fold and merged test predictions, labels and metrics from the finished folds of `run_dir`."""
    files = KFoldFiles(Path(run_dir))
    state = read_json(files.state)
    folds, merge = int(state["folds"]), state["merge"]
    summaries = []
    for k in range(folds):
        if not files.fold_done(k).is_file():
            raise InputError(f"fold {k} is not finished; run `cxrlt kfold --resume {files.path}`", files.fold(k).path)
        summaries.append(read_json(files.fold_done(k)))
    config, table, pool = _pool_table(files.path)
    classes, part = list(table.classes), table.subset(pool)
    oof_probs = _out_of_fold(files, folds, part)
    score = _scorer(config, part, oof_probs, progress)
    ids = np.asarray(part.image_ids, dtype=object)
    write_predictions(files.oof_predictions, ids, classes, oof_probs)
    write_labels(files.oof_labels, ids, classes, part.labels)
    oof_metrics = score(part, oof_probs, OUT_OF_FOLD).metrics
    write_json(files.oof_metrics, oof_metrics)

    test_metrics = None
    test_files = [files.fold(k).predictions("test", "test") for k in range(folds)]
    if all(f.is_file() for f in test_files):
        test = table.split("test")
        test_ids = np.asarray(test.image_ids, dtype=object)
        stacked = [_aligned_to(test_ids, classes, read_predictions(f)) for f in test_files]
        probs = merge_probabilities(np.stack(stacked), merge, axis=0)
        write_predictions(files.predictions, test_ids, classes, probs)
        write_labels(files.labels, test_ids, classes, test.labels)
        test_metrics = score(test, probs, "test", folds=folds, merge=merge).metrics
        write_json(files.metrics, test_metrics)
    else:
        warnings.warn("the test split is empty: only out-of-fold predictions were written")
    write_json(files.state, {"folds": folds, "merge": merge, "complete": True,
                             "oof": oof_metrics["mean"], "test": test_metrics["mean"] if test_metrics else None})
    return KFoldResult(files.path, summaries, oof_metrics, test_metrics,
                       _format(summaries, oof_metrics, test_metrics, merge))


def _scorer(config: RunConfig, pool: Any, oof_probs: np.ndarray, progress: bool) -> Callable[..., Scores]:
    """Scoring of a k-fold table: everything tuned on the out-of-fold predictions of the non-test `pool`."""
    evaluation = config.evaluation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        thresholds = tune_thresholds(pool.labels, oof_probs, method=evaluation.threshold,
                                     target_sensitivity=evaluation.target_sensitivity)
    common = dict(
        groups=LabelStats.from_table(pool).groups(**evaluation.groups.model_dump()), thresholds=thresholds,
        tuning=Tuning(evaluation.threshold, OUT_OF_FOLD, evaluation.target_sensitivity),
        temperature=fit_temperature(pool.labels, oof_probs) if evaluation.temperature else None,
        bootstrap=BootstrapSettings(evaluation.bootstrap, seed=config.train.seed), progress=progress,
    )

    def score(part: Any, probs: np.ndarray, split: str, **extras: Any) -> Scores:
        return score_predictions(part.labels, probs, part.classes, split=split, patients=patient_ids(part),
                                 extras=extras, **common)

    return score


def _out_of_fold(files: KFoldFiles, folds: int, part: Any) -> np.ndarray:
    """The folds' validation predictions as one table in the row order of `part` (each image by one fold)."""
    tables = [read_predictions(files.fold(k).predictions("val", "test")) for k in range(folds)]
    ids = np.concatenate([t.ids for t in tables])
    wanted = np.asarray(part.image_ids, dtype=object)
    if len(ids) != len(wanted) or set(ids) != set(wanted):
        raise InputError(
            f"the folds' validation predictions ({len(ids)} rows) do not cover the {len(wanted)} non-test images "
            "exactly once; the data changed since the folds were trained", files.path)
    pooled = ClassTable(ids, tables[0].classes, np.concatenate([t.values for t in tables]))
    return _aligned_to(wanted, list(part.classes), pooled)


def _aligned_to(ids: np.ndarray, classes: list[str], table: ClassTable) -> np.ndarray:
    """`table`'s values with rows in the order of `ids` and columns of `classes` (InputError if they differ)."""
    reference = ClassTable(ids, tuple(classes), np.zeros((len(ids), len(classes))), None)
    return stack_tables([reference, table])[2][1]


def _format(summaries: list[dict[str, Any]], oof: dict[str, Any], test: dict[str, Any] | None, merge: str) -> str:
    """Per fold validation and test means, then out-of-fold and the merged test."""

    def cells(mean: dict[str, Any] | None) -> str:
        if not mean:
            return f"{'-':>8}  {'-':>8}"
        return "  ".join(f"{mean[key]:>8.4f}" if mean.get(key) is not None else f"{'n/a':>8}" for key in ("auc", "ap"))

    lines = [f"{'':<24}  {'mean AUC':>8}  {'mAP':>8}"]
    for s in summaries:
        lines.append(f"{'fold ' + str(s['fold']) + ' validation':<24}  {cells(s['val'])}")
    for s in summaries:
        lines.append(f"{'fold ' + str(s['fold']) + ' test':<24}  {cells(s['test'])}")
    lines.append(f"{'out-of-fold':<24}  {cells(oof['mean'])}")
    if test is not None:
        lines.append(f"{'test, ' + merge + ' of folds':<24}  {cells(test['mean'])}")
    return "\n".join(lines)
