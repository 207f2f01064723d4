"""The names of everything cxrlt writes: run, stage, k-fold and saved-model files. The one place they are spelled.

A layout knows paths only. Ownership and locking of the folders are
`cxrlt.runs.folder` (which builds on these classes); what goes into the
files is the business of the modules that write them. Every other module
asks a layout for a path instead of joining a file name itself, so a name
changes in one line. Layout of a run folder::

    RUN_DIR/config.yaml, environment.json
    RUN_DIR/stages/NN-name/checkpoints/{last,best}.ckpt, logs/metrics.csv,
                           tensorboard/, stage.json, done.json
    RUN_DIR/model.safetensors, model.json          (the saved model)
    RUN_DIR/predictions.csv, labels.csv, metrics.json          (headline split)
    RUN_DIR/predictions_SPLIT.csv, labels_SPLIT.csv, metrics_SPLIT.json
    RUN_DIR/plots/{roc,pr,per_class,reliability,training_curves}.png,
                  train_labels/, cams/
    RUN_DIR/report.md, report.html, README.md      (README: the model card with hub metadata)

of a k-fold folder::

    KFOLD_DIR/kfold.yaml, kfold.json, folds/K/ (a run folder + fold.json),
    KFOLD_DIR/predictions_oof.csv, labels_oof.csv, metrics_oof.json,
    KFOLD_DIR/predictions.csv, labels.csv, metrics.json

and of a sweep folder::

    SWEEP_DIR/base.yaml, sweep.json, runs/VARIANT/seedN/ (a run folder), logs/VARIANT-seedN.log,
    SWEEP_DIR/results.csv, summary.md, summary.json, summary.png

An export folder (`cxrlt export RUN --out DIR`)::

    DIR/model.onnx or model.pt, model_export.json, model.safetensors, model.json, README.md

Files written beside a chosen output: `cxrlt ensemble --out E.csv` writes
E_selection.json and E_metrics.json; `cxrlt compare --out DIR` writes
DIR/comparison.{json,csv,png}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Plots of a run, by role.
PLOT_FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "per_class": "per_class.png",
    "reliability": "reliability.png",
    "training_curves": "training_curves.png",
    "subgroups": "subgroups.png",
}
# Label-statistics plots of the training split, by role (inside plots/train_labels/).
LABEL_PLOT_FILES = {
    "distribution": "label_distribution.png",
    "labels_per_image": "labels_per_image.png",
    "cooccurrence": "cooccurrence.png",
    "cooccurrence_counts": "cooccurrence_counts.png",
}


@dataclass(frozen=True)
class ModelFiles:
    """A saved model: weights and the model card they are rebuilt from (a run folder or an export folder)."""

    folder: Path

    WEIGHTS = "model.safetensors"
    CARD = "model.json"

    @classmethod
    def at(cls, path: str | Path) -> "ModelFiles":
        """The model files of a folder, or of the folder holding a given weights file."""
        path = Path(path)
        return cls(path.parent if path.suffix == ".safetensors" else path)

    @property
    def weights(self) -> Path:
        return self.folder / self.WEIGHTS

    @property
    def card(self) -> Path:
        return self.folder / self.CARD

    def exist(self) -> bool:
        return self.weights.is_file() and self.card.is_file()


# The human- and hub-readable model card (Markdown with hub metadata) of a run folder or an export.
MODEL_README = "README.md"


@dataclass(frozen=True)
class ExportFiles:
    """What `cxrlt export RUN --out DIR` writes: a saved model (weights + model.json), a portable graph and
    its sidecar, and the model card README."""

    folder: Path

    ONNX = "model.onnx"
    TORCHSCRIPT = "model.pt"
    SIDECAR = "model_export.json"
    # --format -> the graph file it writes.
    GRAPHS = {"onnx": ONNX, "torchscript": TORCHSCRIPT}

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    def graph(self, fmt: str) -> Path:
        return self.folder / self.GRAPHS[fmt]

    @property
    def sidecar(self) -> Path:
        """Classes, input contract, normalisation, evaluation transforms, thresholds, positives, groups."""
        return self.folder / self.SIDECAR

    @property
    def readme(self) -> Path:
        return self.folder / MODEL_README

    @property
    def model(self) -> ModelFiles:
        return ModelFiles(self.folder)


@dataclass(frozen=True)
class EnsembleFiles:
    """What `cxrlt ensemble` writes: its prediction table and, beside it, the selection and the metrics."""

    predictions: Path

    @property
    def selection(self) -> Path:
        """Class-wise selection: the members chosen per class."""
        return self.predictions.with_name(self.predictions.stem + "_selection.json")

    @property
    def metrics(self) -> Path:
        """The metrics report of the ensemble on the test labels."""
        return self.predictions.with_name(self.predictions.stem + "_metrics.json")


@dataclass(frozen=True)
class ComparisonFiles:
    """What `cxrlt compare --out DIR` writes."""

    folder: Path

    @property
    def report(self) -> Path:
        return self.folder / "comparison.json"

    @property
    def table(self) -> Path:
        """One row per class, mean and group."""
        return self.folder / "comparison.csv"

    @property
    def figure(self) -> Path:
        """Per-class differences with their intervals."""
        return self.folder / "comparison.png"


@dataclass(frozen=True)
class StageFiles:
    """One training stage's folder."""

    folder: Path

    @property
    def checkpoints(self) -> Path:
        """Folder of `last.ckpt` (end of every epoch) and `best.ckpt` (weights of the best epoch)."""
        return self.folder / "checkpoints"

    def checkpoint(self, which: str) -> Path:
        """`best` or `last` checkpoint."""
        return self.checkpoints / f"{which}.ckpt"

    @property
    def facts(self) -> Path:
        """How the stage is distributed and scheduled (written when it starts training)."""
        return self.folder / "stage.json"

    @property
    def done(self) -> Path:
        """Written when the stage has finished."""
        return self.folder / "done.json"

    @property
    def logs(self) -> Path:
        """The CSV logger's folder (`metrics.csv`, and the logs of earlier attempts)."""
        return self.folder / "logs"

    @property
    def log(self) -> Path:
        return self.logs / "metrics.csv"

    def earlier_log(self, attempt: int) -> Path:
        """The log of the attempt before resume number `attempt` (the CSV logger would delete it)."""
        return self.logs / f"metrics-before-resume-{attempt}.csv"

    def earlier_logs(self) -> list[Path]:
        """Logs of earlier attempts, oldest first."""
        return sorted(self.logs.glob("metrics-before-resume-*.csv"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))

    @property
    def tensorboard(self) -> Path:
        return self.folder / "tensorboard"


@dataclass(frozen=True)
class ResultFiles:
    """Where a finished run's results are read from (what a sweep's summary reads).

    The metrics report, the scored predictions and their labels, and the
    validation predictions and labels its decision thresholds were tuned on
    (None: tuned on the scored predictions themselves, as out-of-fold ones are).
    """

    metrics: Path
    predictions: Path
    labels: Path
    validation: tuple[Path, Path] | None

    def tuning(self, split: str) -> tuple[Path, Path]:
        """The predictions and labels the thresholds of results scored on `split` were tuned on."""
        if self.validation is None or split == "val":
            return self.predictions, self.labels
        return self.validation


@dataclass(frozen=True)
class RunFiles:
    """Every path of one run folder."""

    path: Path

    CONFIG = "config.yaml"
    # Top-level entries a run writes (an ownership marker lists them).
    ENTRIES = ("config.yaml", "environment.json", "stages", ModelFiles.WEIGHTS, ModelFiles.CARD, "predictions.csv",
               "labels.csv", "metrics.json", "predictions_val.csv", "labels_val.csv", "metrics_val.json",
               "predictions_test.csv", "labels_test.csv", "metrics_test.json", "plots", "report.md", "report.html",
               MODEL_README)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def stages(self) -> Path:
        return self.path / "stages"

    def stage(self, index: int, name: str) -> StageFiles:
        """Folder of stage number `index` (from 0) named `name`."""
        return StageFiles(self.stages / f"{index + 1:02d}-{name}")

    def stage_folders(self) -> list[StageFiles]:
        """The stages present, in order."""
        return [StageFiles(p) for p in sorted(self.stages.glob("[0-9][0-9]-*")) if p.is_dir()]

    @property
    def model(self) -> ModelFiles:
        return ModelFiles(self.path)

    def predictions(self, split: str, headline: str) -> Path:
        """Per-image probabilities of `split` (`predictions.csv` for the headline split)."""
        return self.path / f"predictions{_suffix(split, headline)}.csv"

    def labels(self, split: str, headline: str) -> Path:
        """The labels of `split`, in the order of its predictions (what the report and re-scoring read)."""
        return self.path / f"labels{_suffix(split, headline)}.csv"

    def metrics(self, split: str, headline: str) -> Path:
        """The metrics report of `split` (`metrics.json` for the headline split)."""
        return self.path / f"metrics{_suffix(split, headline)}.json"

    @property
    def headline_metrics(self) -> Path:
        """`metrics.json`: the metrics of the run's headline split, whichever it is."""
        return self.path / "metrics.json"

    @property
    def headline_predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def headline_labels(self) -> Path:
        return self.path / "labels.csv"

    @property
    def results(self) -> ResultFiles:
        """The headline split's metrics, predictions and labels, and validation's files (saved apart when another
        split is the headline)."""
        apart = "test"  # any headline other than validation names validation's files apart
        return ResultFiles(self.headline_metrics, self.headline_predictions, self.headline_labels,
                           (self.predictions("val", apart), self.labels("val", apart)))

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def plot(self, role: str) -> Path:
        """A plot of the run by role (`PLOT_FILES`)."""
        return self.plots / PLOT_FILES[role]

    @property
    def label_plots(self) -> Path:
        """Label statistics of the training split (`LABEL_PLOT_FILES`)."""
        return self.plots / "train_labels"

    def label_plot(self, role: str) -> Path:
        return self.label_plots / LABEL_PLOT_FILES[role]

    @property
    def cams(self) -> Path:
        """Example class activation maps."""
        return self.plots / "cams"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def readme(self) -> Path:
        """The model card for people and the hub (`README.md` with hub metadata)."""
        return self.path / MODEL_README


def _suffix(split: str, headline: str) -> str:
    return "" if split == headline else f"_{split}"


@dataclass(frozen=True)
class KFoldFiles:
    """Every path of a k-fold folder."""

    path: Path

    CONFIG = "kfold.yaml"
    STATE = "kfold.json"
    ENTRIES = ("kfold.yaml", "kfold.json", "folds", "predictions_oof.csv", "labels_oof.csv", "metrics_oof.json",
               "predictions.csv", "labels.csv", "metrics.json")

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        """The configuration every fold derives from (written last at start: a folder with it is a started k-fold)."""
        return self.path / self.CONFIG

    @property
    def state(self) -> Path:
        """Folds, merge rule and, when complete, summary scores."""
        return self.path / self.STATE

    def fold(self, k: int) -> RunFiles:
        """The run folder of fold `k`."""
        return RunFiles(self.path / "folds" / str(k))

    def fold_done(self, k: int) -> Path:
        """Written when fold `k` has finished (its validation and test means)."""
        return self.fold(k).path / "fold.json"

    @property
    def oof_predictions(self) -> Path:
        return self.path / "predictions_oof.csv"

    @property
    def oof_labels(self) -> Path:
        """Labels of the out-of-fold predictions, in their row order."""
        return self.path / "labels_oof.csv"

    @property
    def oof_metrics(self) -> Path:
        return self.path / "metrics_oof.json"

    @property
    def results(self) -> ResultFiles:
        """The out-of-fold metrics, predictions and labels: every non-test image, scored by a model that did not
        train on its patient (thresholds tuned on them)."""
        return ResultFiles(self.oof_metrics, self.oof_predictions, self.oof_labels, None)

    @property
    def predictions(self) -> Path:
        """Test predictions, the fold models merged."""
        return self.path / "predictions.csv"

    @property
    def labels(self) -> Path:
        """Labels of the test predictions, in their row order."""
        return self.path / "labels.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"


@dataclass(frozen=True)
class SweepFiles:
    """Every path of a sweep folder (`cxrlt sweep`)."""

    path: Path

    BASE = "base.yaml"
    STATE = "sweep.json"
    ENTRIES = ("base.yaml", "sweep.json", "runs", "logs", "results.csv", "summary.md", "summary.json", "summary.png")

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def base(self) -> Path:
        """The base configuration every run applies its overrides to (written last at start)."""
        return self.path / self.BASE

    @property
    def state(self) -> Path:
        """Variants, seeds, baseline, and what happened to each run (time, error)."""
        return self.path / self.STATE

    def run(self, variant: str, seed: int) -> RunFiles:
        """The run folder of one variant and seed."""
        return RunFiles(self.path / "runs" / variant / f"seed{seed}")

    def kfold(self, variant: str, seed: int) -> KFoldFiles:
        """The k-fold folder of one variant and seed (a sweep scored out of fold, `--folds`): where `run` is."""
        return KFoldFiles(self.run(variant, seed).path)

    def log(self, variant: str, seed: int) -> Path:
        """Output of the `cxrlt train` (or `cxrlt kfold`) process of one run (appended to on every attempt)."""
        return self.path / "logs" / f"{variant}-seed{seed}.log"

    @property
    def results(self) -> Path:
        """One row per run: variant, seed, status, time and every metric overall and per group."""
        return self.path / "results.csv"

    @property
    def summary_md(self) -> Path:
        return self.path / "summary.md"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def plot(self) -> Path:
        """Per group, the variants side by side with their seeds."""
        return self.path / "summary.png"
