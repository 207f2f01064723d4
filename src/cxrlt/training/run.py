"""A training run end to end: run folder, stages, resume, export, evaluation.

Run folder layout::

    RUN_DIR/config.yaml            resolved configuration (defaults filled in)
    RUN_DIR/environment.json       seed, library versions, command
    RUN_DIR/stages/NN-name/        checkpoints/{last,best}.ckpt, logs/, done.json
    RUN_DIR/model.safetensors      final weights (best of the last stage)
    RUN_DIR/model.json             how to rebuild and use them
    RUN_DIR/predictions/SPLIT.csv  per-image probabilities
    RUN_DIR/metrics.json, report.md, plots/

Every file is written atomically, so a run killed at any moment leaves only
complete files; `--resume` restarts the first unfinished stage from its last
end-of-epoch checkpoint.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cxrlt import __version__
from cxrlt.config import RunConfig, load_config
from cxrlt.data.transforms import build_pipeline
from cxrlt.errors import ConfigError
from cxrlt.io import write_json, write_text
from cxrlt.models.build import CxrModel, build_model
from cxrlt.training.checkpoints import AtomicCheckpointIO, load_checkpoint, model_state
from cxrlt.training.data import RunData, StageDataModule, load_run_data
from cxrlt.training.module import ClassifierModule, _mix_seed
from cxrlt.training.stages import Stage, resolve_stages

if TYPE_CHECKING:
    from cxrlt.training.evaluate import SplitResult

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"


@dataclass
class RunResult:
    """Where a finished run lives and its headline scores (`metrics.table` prints them)."""

    run_dir: Path
    metrics: "SplitResult"


def train(config: RunConfig, run_dir: str | Path, progress: bool = True) -> RunResult:
    """Train a new run of `config` in `run_dir` (which must not hold another run)."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with `cxrlt train --resume {run_dir}` "
            "or choose another --out folder"
        )
    write_text(run_dir / CONFIG_FILE, config.to_yaml())
    return _run(config, run_dir, progress)


def resume(run_dir: str | Path, progress: bool = True) -> RunResult:
    """Continue the run in `run_dir` from its saved configuration and checkpoints."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); start one with `cxrlt train CONFIG`")
    return _run(load_config(run_dir / CONFIG_FILE), run_dir, progress)


def _run(config: RunConfig, run_dir: Path, progress: bool) -> RunResult:
    write_json(run_dir / "environment.json", environment(config))
    data = load_run_data(config)
    previous: Stage | None = None
    for stage in resolve_stages(config, run_dir):
        if not stage.done:
            run_stage(config, data, stage, previous, progress)
        previous = stage
    assert previous is not None
    from cxrlt.training.evaluate import finish_run

    return RunResult(run_dir, finish_run(config, data, run_dir, previous, progress=progress))


def environment(config: RunConfig) -> dict[str, Any]:
    """Seed, command line and library versions, saved with the run."""
    import lightning
    import numpy
    import timm

    return {
        "cxrlt": __version__,
        "seed": config.train.seed,
        "command": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        # Libraries that decode images or compute splits and metrics.
        **{name: _version(name) for name in ("pillow", "pydicom", "scipy", "scikit-learn", "pandas")},
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),  # CPU float results depend on the intra-op thread count
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def stage_model(config: RunConfig, data: RunData, stage: Stage, previous: Stage | None) -> CxrModel:
    """The model a stage starts from: fresh (first stage) or the previous stage's weights."""
    torch.manual_seed(_mix_seed(config.train.seed, stage.index))
    context = model_context(data)
    if previous is None:
        return build_model(config.model, len(data.classes), stage.image_size, context=context)
    model = build_model(config.model, len(data.classes), stage.image_size, context=context, pretrained=False)
    checkpoint = load_checkpoint(previous.checkpoint(stage.init_from))
    model.load_state_dict(model_state(checkpoint))
    if stage.reinit_head:
        model.head.reset_classifier()
    return model


def model_context(data: RunData) -> dict[str, Any]:
    """Data-derived inputs for heads (training statistics, class names)."""
    return {"class_names": list(data.classes), "train_labels": data.part("train").labels}


def run_stage(config: RunConfig, data: RunData, stage: Stage, previous: Stage | None, progress: bool) -> None:
    """Train one stage, resuming from its last checkpoint when one exists."""
    train_cfg = config.train
    L.seed_everything(_mix_seed(train_cfg.seed, stage.index) % (2**31), workers=True, verbose=False)
    model = stage_model(config, data, stage, previous)
    loss = stage.loss.build(class_counts=data.train_stats, class_names=list(data.classes))
    datamodule = StageDataModule(
        data, stage.image_size, stage.batch_size, stage.sampler,
        build_pipeline(config.augment.train, stage.image_size), train_cfg.num_workers, train_cfg.seed,
    )
    steps_per_epoch = _steps_per_epoch(len(data.part("train")), stage.batch_size, train_cfg.limit_train_batches)
    module = ClassifierModule(
        model, loss, stage.optimizer, stage.schedule, steps_per_epoch, stage.epochs, train_cfg.seed,
        freeze_backbone=stage.freeze_backbone, mixer=_mixer(config), channels_last=train_cfg.channels_last,
    )
    if train_cfg.compile:
        module.model = torch.compile(module.model)
    monitor = f"val/{train_cfg.monitor}"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=stage.checkpoints, filename="best", monitor=monitor, mode="max", save_top_k=1,
                        save_last=True, auto_insert_metric_name=False, enable_version_counter=False),
    ]
    if train_cfg.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=train_cfg.ema_decay))
    if train_cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=train_cfg.early_stopping_patience))
    last = stage.checkpoint("last")
    resuming = last.is_file()
    if resuming:
        _keep_earlier_log(stage.folder / "logs")
    loggers = [
        CSVLogger(stage.folder, name="logs", version=""),
        TensorBoardLogger(stage.folder, name="tensorboard", version="", default_hp_metric=False),
    ]
    trainer = L.Trainer(
        default_root_dir=stage.folder,
        max_epochs=stage.epochs,
        accelerator=train_cfg.accelerator,
        devices=train_cfg.devices,
        strategy=train_cfg.strategy,
        num_nodes=train_cfg.num_nodes,
        precision=train_cfg.precision,
        accumulate_grad_batches=train_cfg.accumulate,
        gradient_clip_val=train_cfg.gradient_clip,
        deterministic="warn" if train_cfg.deterministic else False,
        callbacks=callbacks,
        logger=loggers,
        limit_train_batches=train_cfg.limit_train_batches,
        limit_val_batches=train_cfg.limit_eval_batches,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        plugins=[AtomicCheckpointIO()],
    )
    log.info("stage %s: %d epochs at %d px, batch %d, sampler %s, loss %s%s", stage.name, stage.epochs,
             stage.image_size, stage.batch_size, stage.sampler.name, stage.loss.name,
             f" (resuming from {last})" if resuming else "")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*The number of training batches.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resuming else None, weights_only=True)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if trainer.global_rank == 0:
        write_json(stage.done_marker, {
            "stage": stage.name, "epochs_run": trainer.current_epoch,
            "best": str(stage.checkpoint("best")), "best_score": _float(callbacks[0].best_model_score),
            "monitor": monitor,
        })


def _steps_per_epoch(n_train: int, batch_size: int, limit: int | None) -> int:
    steps = max(1, n_train // batch_size) if n_train > batch_size else 1
    return min(steps, limit) if limit else steps


def _mixer(config: RunConfig):
    if not config.augment.mixing:
        return None
    from cxrlt.data.mixing import build_mixer

    return build_mixer(config.augment.mixing)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_run_config(run_dir: Path) -> RunConfig:
    """The resolved configuration saved in a run folder."""
    return load_config(Path(run_dir) / CONFIG_FILE)


def _keep_earlier_log(logs: Path) -> None:
    """Move the interrupted attempt's metrics.csv aside: Lightning's CSV logger deletes it when it restarts.

    The epochs logged before the interruption live on as
    `metrics-before-resume-N.csv`; `read_training_logs` reads them first.
    """
    from lightning.pytorch.utilities import rank_zero_only

    current = logs / "metrics.csv"
    if rank_zero_only.rank != 0 or not current.is_file():
        return
    attempt = 1 + len(list(logs.glob("metrics-before-resume-*.csv")))
    os.replace(current, logs / f"metrics-before-resume-{attempt}.csv")
