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
    RUN/metrics_oof.json      their metrics (thresholds tuned on them)
    RUN/predictions.csv       test predictions: the fold models merged per image and class
    RUN/metrics.json          their metrics, F1 at the out-of-fold thresholds

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
from typing import Any

import numpy as np

from cxrlt.config import RunConfig, load_config, parse_config
from cxrlt.data.stats import LabelStats
from cxrlt.ensemble.combine import stack_tables
from cxrlt.ensemble.merge import check_merge, merge_probabilities
from cxrlt.errors import ConfigError, InputError, Interrupted
from cxrlt.evaluation.metrics import UndefinedMetricWarning, compute_metrics, tune_thresholds
from cxrlt.evaluation.predictions import ClassTable, read_predictions, write_predictions
from cxrlt.io import read_json, write_json, write_text
from cxrlt.ownership import claim, is_writer, refuse_if_locked, wait_for_writer
from cxrlt.runs.folder import RunFolder

KIND = "kfold"
BASE_CONFIG = "kfold.yaml"
STATE = "kfold.json"
FOLD_DONE = "fold.json"
LAYOUT = (BASE_CONFIG, STATE, "folds", "predictions_oof.csv", "metrics_oof.json", "predictions.csv", "metrics.json")


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
    return Path(run_dir) / "folds" / str(fold)


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

    run_dir = Path(run_dir)
    check_merge(merge)
    if folds < 2:
        raise ConfigError(f"k-fold needs at least 2 folds, got {folds}")
    if not is_writer():
        wait_for_writer(run_dir, lambda folder: (folder / BASE_CONFIG).is_file(), what=f"the k-fold folder {run_dir}")
        _train_folds(config, run_dir, folds, progress)
        return None
    refuse_if_locked(run_dir)
    text = config.to_yaml()
    started = (run_dir / BASE_CONFIG).is_file()
    if started:
        state = read_json(run_dir / STATE) if (run_dir / STATE).is_file() else {}
        if (run_dir / BASE_CONFIG).read_text(encoding="utf-8") != text or state.get("folds") != folds \
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
    folder = claim(run_dir, KIND, adopt=_legacy_kfold, hint="choose a new or empty --out folder")
    folder.record(*LAYOUT)
    with folder.lock("kfold"):
        if not started:
            write_json(run_dir / STATE, {"folds": folds, "merge": merge, "complete": False})
            write_text(run_dir / BASE_CONFIG, text)  # last: a folder with it is a started k-fold run
        _train_folds(config, run_dir, folds, progress)
        return combine_folds(run_dir, progress=progress)


def _train_folds(config: RunConfig, run_dir: Path, folds: int, progress: bool) -> None:
    """Train or resume every unfinished fold (every process of a multi-process launch runs this)."""
    from cxrlt.runs.train import resume, train

    for k in range(folds):
        folder = fold_dir(run_dir, k)
        done = folder / FOLD_DONE
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
        val = read_json(folder / "metrics_val.json")
        summary = {"fold": k, "val": val["mean"], "test": result.metrics.metrics["mean"]
                   if result.metrics.split == "test" else None}
        write_json(done, summary)


def _legacy_kfold(folder: Path) -> bool:
    """A k-fold folder written before folders carried a marker."""
    return (folder / BASE_CONFIG).is_file() and (folder / STATE).is_file()


def resume_kfold(run_dir: str | Path, progress: bool = True) -> KFoldResult:
    """Continue the k-fold run in `run_dir` with the configuration, folds and merge it was started with."""
    run_dir = Path(run_dir)
    if not (run_dir / BASE_CONFIG).is_file() or not (run_dir / STATE).is_file():
        raise ConfigError(f"{run_dir} is not a k-fold folder (no {BASE_CONFIG} / {STATE}); start one with "
                          "`cxrlt kfold CONFIG --folds K`")
    state = read_json(run_dir / STATE)
    return kfold(load_config(run_dir / BASE_CONFIG), run_dir, state["folds"], state["merge"], progress)


def _pool_table(run_dir: Path):
    """The label table with splits of fold 0, and the mask of its non-test rows (the out-of-fold pool)."""
    from cxrlt.data.sources import load_table

    state = read_json(run_dir / STATE)
    config = fold_config(load_config(run_dir / BASE_CONFIG), state["folds"], 0)
    table = load_table(config.data)
    return config, table, (table.meta["split"] != "test").to_numpy(dtype=bool)


def oof_labels(run_dir: str | Path) -> ClassTable:
    """Labels of the out-of-fold images of a k-fold folder (for class-wise ensemble selection)."""
    run_dir = Path(run_dir)
    _, table, pool = _pool_table(run_dir)
    part = table.subset(pool)
    return ClassTable(np.asarray(part.image_ids, dtype=object), tuple(part.classes), part.labels,
                      run_dir / BASE_CONFIG)


def combine_folds(run_dir: str | Path, progress: bool = True) -> KFoldResult:
    """Write out-of-fold and merged test predictions and metrics from the finished folds of `run_dir`."""
    run_dir = Path(run_dir)
    state = read_json(run_dir / STATE)
    folds, merge = int(state["folds"]), state["merge"]
    summaries = []
    for k in range(folds):
        done = fold_dir(run_dir, k) / FOLD_DONE
        if not done.is_file():
            raise InputError(f"fold {k} is not finished; run `cxrlt kfold --resume {run_dir}`", done.parent)
        summaries.append(read_json(done))
    config, table, pool = _pool_table(run_dir)
    classes = list(table.classes)
    part = table.subset(pool)
    groups = LabelStats.from_table(part).groups(**config.evaluation.groups.model_dump())

    # Out-of-fold: each pool image was validation of exactly one fold.
    oof_tables = [read_predictions(fold_dir(run_dir, k) / "predictions_val.csv") for k in range(folds)]
    ids = np.concatenate([t.ids for t in oof_tables])
    wanted = np.asarray(part.image_ids, dtype=object)
    if len(ids) != len(wanted) or set(ids) != set(wanted):
        raise InputError(
            f"the folds' validation predictions ({len(ids)} rows) do not cover the {len(wanted)} non-test images "
            "exactly once; the data changed since the folds were trained", run_dir)
    pooled = ClassTable(ids, oof_tables[0].classes, np.concatenate([t.values for t in oof_tables]))
    oof_probs = _aligned_to(wanted, classes, pooled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        thresholds = tune_thresholds(part.labels, oof_probs, method=config.evaluation.threshold,
                                     target_sensitivity=config.evaluation.target_sensitivity)
        oof_result = compute_metrics(part.labels, oof_probs, classes, thresholds=thresholds)
    write_predictions(run_dir / "predictions_oof.csv", wanted, classes, oof_probs)
    oof_metrics = {"split": "out-of-fold", "n_images": len(part), **oof_result.to_dict(groups)}
    write_json(run_dir / "metrics_oof.json", oof_metrics)

    test_metrics = None
    test_files = [fold_dir(run_dir, k) / "predictions.csv" for k in range(folds)]
    if all(f.is_file() for f in test_files):
        test = table.split("test")
        test_ids = np.asarray(test.image_ids, dtype=object)
        stacked = [_aligned_to(test_ids, classes, read_predictions(f)) for f in test_files]
        probs = merge_probabilities(np.stack(stacked), merge, axis=0)
        write_predictions(run_dir / "predictions.csv", test_ids, classes, probs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            test_result = compute_metrics(test.labels, probs, classes, thresholds=thresholds)
        test_metrics = {"split": "test", "n_images": len(test), "folds": folds, "merge": merge,
                        **test_result.to_dict(groups)}
        write_json(run_dir / "metrics.json", test_metrics)
    else:
        warnings.warn("the test split is empty: only out-of-fold predictions were written")
    write_json(run_dir / STATE, {"folds": folds, "merge": merge, "complete": True,
                                 "oof": oof_metrics["mean"], "test": test_metrics["mean"] if test_metrics else None})
    return KFoldResult(run_dir, summaries, oof_metrics, test_metrics,
                       _format(summaries, oof_metrics, test_metrics, merge))


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
