"""Finish a run (export, thresholds, predictions, metrics, report) and re-evaluate it.

Per evaluated split the run folder gets its predictions, its labels (in
the same row order) and its metrics; the evaluation split (config
`evaluation.split`, test by default) gets the headline names. File names
are `cxrlt.layout.RunFiles`'.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cxrlt.config import RunConfig
from cxrlt.data.stats import save_plots
from cxrlt.evaluation.calibration import fit_temperature
from cxrlt.evaluation.html import write_html_report
from cxrlt.evaluation.metadata import attributes_from_frame
from cxrlt.evaluation.metrics import UndefinedMetricWarning, tune_thresholds
from cxrlt.evaluation.predictions import write_labels, write_predictions
from cxrlt.evaluation.report import plot_training_curves, read_learning_rates, read_training_logs, write_report
from cxrlt.evaluation.protocols import get_protocol
from cxrlt.evaluation.scoring import BootstrapSettings, Scores, Tuning, score_predictions
from cxrlt.evaluation.studies import aggregate_studies, study_attributes
from cxrlt.inference.model_readme import write_model_readme
from cxrlt.inference.predict import predict_probabilities
from cxrlt.inference.saved_model import export_model, load_model
from cxrlt.io import write_json
from cxrlt.layout import RunFiles
from cxrlt.models.build import CxrModel, build_model
from cxrlt.models.card import ModelCard
from cxrlt.training.checkpoints import load_checkpoint, model_state
from cxrlt.training.data import RunData
from cxrlt.training.stages import Stage


def evaluation_split(config: RunConfig) -> str:
    """The split whose results are the run's headline numbers."""
    return config.evaluation.split


def finish_run(config: RunConfig, data: RunData, run_dir: Path, last: Stage, progress: bool = True) -> Scores:
    """Export the best model of the last stage and evaluate it on validation and the evaluation split."""
    model = build_model(config.model, len(data.classes), last.image_size, context=data.model_context(),
                        pretrained=False)
    model.load_state_dict(model_state(load_checkpoint(last.checkpoint("best"))))
    card = ModelCard(model=config.model, classes=list(data.classes), image_size=last.image_size,
                     stored_size=config.data.images.stored,
                     eval_transforms=[spec.model_dump(mode="json") for spec in config.augment.eval],
                     # Thresholds are tuned on TTA probabilities, so `cxrlt predict` applies the same TTA by default.
                     tta=list(config.augment.tta), tta_merge=config.augment.tta_merge,
                     train_positives=data.train_stats.positives,
                     groups=data.train_stats.groups(**config.evaluation.groups.model_dump()))
    val = data.part("val")
    val_store = data.store("val", config.data.images.stored)
    if last.tau_normalise:
        from cxrlt.training.tau import tune_tau

        card.tau_normalisation = tune_tau(model, val_store, val.labels, last.image_size, progress=progress,
                                          eval_transforms=card.eval_transforms)
    val_probs = predict_probabilities(model, val_store, last.image_size, progress=progress, description="predict val",
                                      tta=card.tta, tta_merge=card.tta_merge, eval_transforms=card.eval_transforms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        thresholds = tune_thresholds(val.labels, val_probs, method=config.evaluation.threshold,
                                     target_sensitivity=config.evaluation.target_sensitivity)
    card.thresholds = [float(t) for t in thresholds]
    if config.evaluation.temperature:
        card.temperature = fit_temperature(val.labels, val_probs)
    export_model(model, run_dir, card)
    split = evaluation_split(config)
    results = {"val": score_split(config, data, run_dir, "val", val_probs, card, intervals=split == "val",
                                  progress=progress)}
    if split != "val":
        if len(data.part(split)):
            results[split] = evaluate_split(model, card, config, data, run_dir, split, progress)
        else:
            warnings.warn(f"the {split} split is empty: the run's headline numbers are on validation")
    headline = results.get(split, results["val"])
    if config.evaluation.report:
        write_example_cams(model, card, data.part(headline.split), headline.probs, RunFiles(run_dir).cams)
        write_run_report(config, data, run_dir, headline)
    # The model card for people and the hub, from the files just written (config, card, metrics).
    write_model_readme(run_dir)
    return headline


def write_example_cams(model: CxrModel, card: ModelCard, table: Any, probs: np.ndarray, out_dir: Path,
                       count: int = 4) -> list[Path]:
    """Class activation maps of the most confident true positive of each of the `count` rarest classes present.

    Rare classes are the ones a reader doubts most, so the report shows where
    the model looks for them; one image and one class per overlay.
    """
    from cxrlt.explain import example_overlays

    labels = np.nan_to_num(table.labels, nan=0.0)
    present = [k for k in np.argsort(labels.sum(axis=0), kind="stable") if labels[:, k].sum() > 0][:count]
    paths = table.image_paths()
    written: list[Path] = []
    for k in present:
        row = int(np.argmax(np.where(labels[:, k] > 0, probs[:, k], -1.0)))
        written += example_overlays(model, card, [paths[row]], out_dir, classes=[card.classes[k]], per_image=1)
    return written


def evaluate_split(model: CxrModel, card: ModelCard, config: RunConfig, data: RunData, run_dir: Path,
                   split: str, progress: bool = True) -> Scores:
    """Predict one split with `model`, then score and save it."""
    if config.evaluation.aggregate == "study" and data.part(split).meta["study_id"].isna().all():
        from cxrlt.errors import InputError

        raise InputError(f"none of the {len(data.part(split))} images of the {split} split has a study id: "
                         "study-level scoring needs study ids (a study_id / StudyInstanceUID column, or DICOM files)")
    probs = predict_probabilities(model, data.store(split, card.stored_size), card.image_size,
                                  progress=progress, description=f"predict {split}",
                                  tta=card.tta, tta_merge=card.tta_merge, eval_transforms=card.eval_transforms)
    return score_split(config, data, run_dir, split, probs, card, progress=progress)


def patient_ids(table: Any) -> np.ndarray | None:
    """Patient id of each row, or None when the table has none (the bootstrap then resamples images)."""
    column = table.meta["patient_id"]
    return None if column.isna().all() else column.to_numpy(dtype=object)


def score_split(config: RunConfig, data: RunData, run_dir: Path, split: str, probs: np.ndarray,
                card: ModelCard, intervals: bool = True, progress: bool = False) -> Scores:
    """Write predictions, labels and metrics (`cxrlt.evaluation.scoring`) of `split` into the run folder.

    Thresholds are the card's (tuned on validation by `evaluation.threshold`),
    the temperature too (fitted on validation when `evaluation.temperature`);
    with `intervals` and `evaluation.bootstrap` > 0, bootstrap intervals
    seeded by `train.seed`, over patients when the table has patient ids.
    """
    part = data.part(split)
    files, headline, evaluation = RunFiles(run_dir), evaluation_split(config), config.evaluation
    write_predictions(files.predictions(split, headline), part.image_ids, list(data.classes), probs)
    write_labels(files.labels(split, headline), part.image_ids, list(data.classes), part.labels)
    extras: dict[str, Any] = {}
    if card.tta:
        extras["tta"] = {"views": list(card.tta), "merge": card.tta_merge}
    if card.tau_normalisation is not None:
        extras["tau_normalisation"] = card.tau_normalisation
    labels, scored_probs, patients = part.labels, probs, patient_ids(part)
    attributes = None
    if evaluation.subgroups:
        attributes = attributes_from_frame(part.meta, evaluation.subgroups, evaluation.age_bands,
                                           where=f"the {split} split")
    aggregate = protocol = None
    if evaluation.aggregate == "study":
        study_ids = part.meta["study_id"].to_numpy(dtype=object)
        studies = aggregate_studies(study_ids, probs, labels, evaluation.study_merge, patients)
        labels, scored_probs, patients, aggregate = studies.labels, studies.probs, studies.patients, studies.summary()
        if attributes is not None:
            attributes = study_attributes(attributes, study_ids)
    if evaluation.protocol is not None:
        protocol = get_protocol(evaluation.protocol)
        protocol.order(data.classes, f"the run's classes ({config.data.classes})")
    scores = score_predictions(
        labels, scored_probs, data.classes, split=split, groups=card.groups, thresholds=card.thresholds,
        tuning=None if card.thresholds is None else Tuning(evaluation.threshold, "val", evaluation.target_sensitivity),
        temperature=card.temperature, patients=patients, extras=extras,
        bootstrap=BootstrapSettings(evaluation.bootstrap, seed=config.train.seed) if intervals else None,
        train_positives=card.train_positives, progress=progress, subgroups=attributes,
        subgroup_min_images=evaluation.min_subgroup, aggregate=aggregate, protocol=protocol,
    )
    write_json(files.metrics(split, headline), scores.metrics)
    return scores


def write_run_report(config: RunConfig, data: RunData, run_dir: Path, scored: Scores) -> Path:
    """Plots, `report.md` and `report.html` of the headline split."""
    files = RunFiles(run_dir)
    plots = scored.write_plots(files.plots)
    curves = plot_training_curves(read_training_logs(run_dir), files.plot("training_curves"),
                                  read_learning_rates(run_dir))
    label_plots = save_plots(data.train_stats, files.label_plots, groups=scored.groups)
    relative = [str(Path(p).relative_to(run_dir)) for p in [*plots, *([curves] if curves else []), *label_plots]]
    setup = {
        "backbone": f"{config.model.backbone} ({'pretrained' if config.model.pretrained else 'random init'}), "
                    f"pooling {config.model.pooling.name}, head {config.model.head.name}",
        "loss": config.loss.name, "sampler": config.train.sampler.name,
        "stages": ", ".join(f"{s.name} ({s.epochs or config.train.epochs} ep)" for s in config.stage_list()),
        "input": f"{config.data.images.size} px", "evaluated split": scored.split,
    }
    splits = {name: len(data.part(name)) for name in ("train", "val", "test")}
    report = write_report(files.report_md, f"cxrlt run: {config.name}", setup, splits, scored.table,
                          scored.metrics, relative, notes=scored.warnings)
    write_html_report(run_dir)
    return report


def evaluate_run(run_dir: Path, split: str, progress: bool = True, evaluation: dict[str, Any] | None = None) -> Scores:
    """Re-evaluate a finished run's saved model on `split` (predictions + metrics files).

    `evaluation` replaces settings of the run's `evaluation` config section
    for this evaluation (e.g. `{"subgroups": ["sex"], "aggregate": "study"}`).
    """
    from cxrlt.runs.folder import RunFolder
    from cxrlt.training.data import load_run_data

    run_dir = Path(run_dir)
    RunFolder(run_dir).require_started()
    with RunFolder(run_dir).writing("evaluate"):
        config = RunFolder(run_dir).load_config()
        if evaluation:
            config = config.model_copy(update={"evaluation": config.evaluation.model_validate(
                {**config.evaluation.model_dump(), **evaluation})})
        model, card = load_model(run_dir)
        data = load_run_data(config)
        return evaluate_split(model, card, config, data, run_dir, split, progress)
