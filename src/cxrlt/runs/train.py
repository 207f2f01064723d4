"""A training run end to end: run folder, stages, resume, export, evaluation.

The run folder's names are `cxrlt.layout`'s; its ownership and lock are
`cxrlt.runs.folder.RunFolder`.
Before the folder is claimed, everything a start can get wrong is checked:
the data are read and split, and every pending stage's model, loss, sampler
and transforms are built. Every file is written atomically, so a run killed
at any moment leaves only complete files; `--resume` restarts the first
unfinished stage from the end of its last finished epoch.

Multi-process training (Lightning DDP, launched by Lightning or torchrun):
every process runs this same code; global rank 0 writes the run folder, the
others attach to it, train their shard and leave the final evaluation to
rank 0.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from cxrlt import __version__
from cxrlt.config import RunConfig, apply_overrides, load_config, load_yaml, parse_config
from cxrlt.data.transforms import build_pipeline
from cxrlt.errors import ConfigError, CxrltError, DiskFull, Interrupted
from cxrlt.io import write_json, write_text
from cxrlt.layout import StageFiles
from cxrlt.models.build import CxrModel, build_model
from cxrlt.ownership import is_writer, refuse_if_locked
from cxrlt.runs.folder import RunFolder
from cxrlt.training.checkpoints import AtomicCheckpointIO, load_checkpoint, model_state
from cxrlt.training.data import RunData, StageDataModule, load_run_data
from cxrlt.seeds import mix_seed
from cxrlt.training.module import ClassifierModule
from cxrlt.training.stages import Stage, resolve_stages

if TYPE_CHECKING:
    from cxrlt.evaluation.scoring import Scores

log = logging.getLogger(__name__)
# Settings `--resume` may change: where and how fast the run computes, and whether unreadable images
# are left out; anything else would make the resumed run a different experiment.
RESUME_SAFE = ("data.images.skip_bad", "data.images.cache", "train.num_workers", "train.accelerator",
               "train.devices", "train.strategy", "train.num_nodes", "evaluation.report")


@dataclass
class RunResult:
    """Where a finished run lives and its headline scores (`metrics.table` prints them).

    `metrics` is None in the non-writing processes of a multi-process run,
    which leave the final evaluation to rank 0.
    """

    run_dir: Path
    metrics: "Scores | None"


def train(config: RunConfig, run_dir: str | Path, progress: bool = True) -> RunResult:
    """Train a new run of `config` in `run_dir` (new, empty, or a run folder not started yet)."""
    run = RunFolder(run_dir)
    if not is_writer():
        with run.writing("train"):
            return _run(config, run, progress)
    run.refuse_if_started()
    refuse_if_locked(run.path)
    run.check_claimable()
    data = load_run_data(config)
    check_start(config, data, run)
    run.claim()
    with run.writing("train"):
        run.refuse_if_started()  # a run that started meanwhile in another process
        write_text(run.config, config.to_yaml())
        return _run(config, run, progress, data)


def resume(run_dir: str | Path, progress: bool = True, overrides: Sequence[str] = ()) -> RunResult:
    """Continue the run in `run_dir` from its saved configuration and checkpoints.

    `overrides` may change only the settings in `RESUME_SAFE`; the changed
    configuration is saved for later resumes.
    """
    run = RunFolder(run_dir)
    run.require_started()
    with run.writing("resume"):
        config = resumed_config(run, overrides)
        return _run(config, run, progress)


def resumed_config(run: RunFolder, overrides: Sequence[str]) -> RunConfig:
    """The saved configuration with safe `overrides` applied (ConfigError naming any unsafe key)."""
    saved = load_yaml(run.config)
    if not overrides:
        return parse_config(saved, origin=str(run.config))
    config = parse_config(apply_overrides(saved, overrides), origin=f"{run.config} with overrides")
    before = _flatten(parse_config(saved, origin=str(run.config)).model_dump(mode="json"))
    after = _flatten(config.model_dump(mode="json"))
    changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    unsafe = [key for key in changed if not any(key == safe or key.startswith(safe + ".") for safe in RESUME_SAFE)]
    if unsafe:
        raise ConfigError(
            f"--resume cannot change {', '.join(unsafe)}: that would make the resumed run a different experiment. "
            f"A resume may change only {', '.join(RESUME_SAFE)}; start a new run (another --out) to change the rest"
        )
    if is_writer() and changed:
        write_text(run.config, config.to_yaml())
        log.info("resume: changed %s", ", ".join(changed))
    return config


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def check_start(config: RunConfig, data: RunData, run: RunFolder) -> None:
    """Build what every stage needs (model, loss, sampler, transforms) so a bad setting fails before the folder is claimed.

    The model is built without hub weights (an unreachable hub only warns);
    a local weights file is loaded, so a file that fits no backbone fails here.
    """
    local_weights = config.model.pretrained if not isinstance(config.model.pretrained, bool) else False
    train_labels = data.part("train").labels
    stages = resolve_stages(config, run.path)
    for stage in stages:
        stage.loss.build(class_counts=data.train_stats, class_names=list(data.classes))
        stage.sampler.build(labels=train_labels, num_samples=len(train_labels), seed=config.train.seed, rank=0,
                            world_size=1)
        build_pipeline(config.augment.train, stage.image_size)
    _mixer(config)
    build_model(config.model, len(data.classes), stages[0].image_size, context=data.model_context(),
                pretrained=local_weights)


def _run(config: RunConfig, run: RunFolder, progress: bool, data: RunData | None = None) -> RunResult:
    writer = is_writer()
    if writer:
        write_json(run.environment, environment(config))
    data = data or load_run_data(config)
    stages = resolve_stages(config, run.path)
    # Decided once, before any stage trains, so that every process of a multi-process run agrees.
    pending = [not stage.done for stage in stages]
    previous: Stage | None = None
    for stage, todo in zip(stages, pending):
        if todo:
            run_stage(config, data, stage, previous, progress, run.path)
        previous = stage
    assert previous is not None
    if not writer:
        return RunResult(run.path, None)
    from cxrlt.runs.finish import finish_run

    try:
        return RunResult(run.path, finish_run(config, data, run.path, previous, progress=progress))
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped during the final evaluation; training is finished and saved. Run `cxrlt train --resume "
            f"{run.path}` to evaluate again."
        ) from None


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
    torch.manual_seed(mix_seed(config.train.seed, stage.index))
    context = data.model_context()
    if previous is None:
        return build_model(config.model, len(data.classes), stage.image_size, context=context)
    model = build_model(config.model, len(data.classes), stage.image_size, context=context, pretrained=False)
    checkpoint = load_checkpoint(previous.checkpoint(stage.init_from))
    model.load_state_dict(model_state(checkpoint))
    if stage.reinit_head:
        model.head.reset_classifier()
    return model


def run_stage(config: RunConfig, data: RunData, stage: Stage, previous: Stage | None, progress: bool,
              run_dir: Path) -> None:
    """Train one stage, resuming from its last end-of-epoch checkpoint when one exists."""
    train_cfg = config.train
    L.seed_everything(mix_seed(train_cfg.seed, stage.index) % (2**31), workers=True, verbose=False)
    model = stage_model(config, data, stage, previous)
    loss = stage.loss.build(class_counts=data.train_stats, class_names=list(data.classes))
    datamodule = StageDataModule(
        data, stage.image_size, stage.batch_size, stage.sampler,
        build_pipeline(config.augment.train, stage.image_size), train_cfg.num_workers, train_cfg.seed,
    )
    module = ClassifierModule(
        model, loss, stage.optimizer, stage.schedule, stage.epochs, train_cfg.seed,
        freeze_backbone=stage.freeze_backbone, mixer=_mixer(config), channels_last=train_cfg.channels_last,
    )
    if train_cfg.compile:
        module.model = torch.compile(module.model)
    monitor = f"val/{train_cfg.monitor}"
    files = stage.files
    best = ModelCheckpoint(dirpath=files.checkpoints, filename="best", monitor=monitor, mode="max", save_top_k=1,
                           save_weights_only=True, auto_insert_metric_name=False, enable_version_counter=False)
    # `last.ckpt` at the end of every epoch, whatever the monitored metric did: what a resume starts from.
    # It must carry the updated state of `best` and of early stopping. With validation every epoch both
    # update at the end of the training epoch, after validation; so `last` is saved there too, after them
    # (Lightning runs checkpoint callbacks last, in the order given). Saved at validation end, it held the
    # best score of the epoch before, and a resumed run replaced `best.ckpt` with a worse epoch.
    last_epoch = ModelCheckpoint(dirpath=files.checkpoints, filename="last", monitor=None, save_top_k=1,
                                 save_on_train_epoch_end=True, enable_version_counter=False)
    callbacks: list[L.Callback] = [best, last_epoch, LearningRateMonitor(logging_interval="step"),
                                   StageFacts(stage)]
    if train_cfg.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=train_cfg.ema_decay))
    if train_cfg.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=train_cfg.early_stopping_patience))
    last = stage.checkpoint("last")
    resuming = last.is_file()
    if resuming:
        _keep_earlier_log(files)
    loggers = [
        CSVLogger(files.logs.parent, name=files.logs.name, version=""),
        TensorBoardLogger(files.tensorboard.parent, name=files.tensorboard.name, version="", default_hp_metric=False),
    ]
    trainer = L.Trainer(
        default_root_dir=files.folder,
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
        log_every_n_steps=1,  # the learning rate of every optimiser step reaches the logs
        plugins=[AtomicCheckpointIO()],
    )
    log.info("stage %s: %d epochs at %d px, batch %d, sampler %s, loss %s%s", stage.name, stage.epochs,
             stage.image_size, stage.batch_size, stage.sampler.name, stage.loss.name,
             f" (resuming from {last})" if resuming else "")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*The number of training batches.*")
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")  # inside Lightning's gather
            # A resumed stage writes into its own checkpoint and log folders on purpose.
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resuming else None, weights_only=True)
    except SystemExit:
        # Lightning answers Ctrl-C by exiting the process itself; say where the run stopped instead.
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignored further Ctrl-C
        raise Interrupted(_stopped_at(stage, run_dir)) from None
    except DiskFull as exc:
        raise DiskFull(f"{exc}. {_stopped_at(stage, run_dir)}") from None
    if trainer.interrupted:
        raise Interrupted(_stopped_at(stage, run_dir))
    if is_writer():
        write_json(files.done, {
            "stage": stage.name, "epochs_run": trainer.current_epoch,
            "best": str(stage.checkpoint("best")), "best_score": _float(best.best_model_score),
            "monitor": monitor,
        })


def _stopped_at(stage: Stage, run_dir: Path) -> str:
    """Where a stopped stage can continue from, and the command that continues it."""
    finished = _finished_epochs(stage)
    saved = (f"its last finished epoch ({finished} of {stage.epochs}) is saved in {stage.checkpoint('last')}"
             if finished else "no epoch of it had finished")
    return f"Stage {stage.name} stopped; {saved}. Continue with `cxrlt train --resume {run_dir}`."


def _finished_epochs(stage: Stage) -> int:
    last = stage.checkpoint("last")
    if not last.is_file():
        return 0
    try:
        return int(load_checkpoint(last).get("epoch", -1)) + 1
    except CxrltError:
        return 0


class StageFacts(L.Callback):
    """Saves and prints, once the loaders exist, how a stage is distributed and scheduled.

    `stage.json`: processes, per-device and effective batch size, batches per
    rank and optimiser steps per epoch, and the schedule's total steps.
    """

    def __init__(self, stage: Stage):
        self.stage = stage

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        accumulate = trainer.accumulate_grad_batches
        facts = {
            "stage": self.stage.name,
            "world_size": trainer.world_size,
            "devices": trainer.num_devices,
            "nodes": trainer.num_nodes,
            "batch_per_device": self.stage.batch_size,
            "accumulate": accumulate,
            "effective_batch": self.stage.batch_size * trainer.world_size * accumulate,
            "batches_per_epoch_per_rank": int(trainer.num_training_batches),
            "optimizer_steps_per_epoch": math.ceil(trainer.num_training_batches / accumulate),
            "total_optimizer_steps": int(trainer.estimated_stepping_batches),
        }
        if trainer.is_global_zero:
            write_json(self.stage.files.facts, facts)
            log.info("stage %s: %d process(es) x batch %d x accumulate %d = effective batch %d; %d optimiser "
                     "steps per epoch, %d in all", self.stage.name, facts["world_size"], facts["batch_per_device"],
                     accumulate, facts["effective_batch"], facts["optimizer_steps_per_epoch"],
                     facts["total_optimizer_steps"])


def _mixer(config: RunConfig):
    if not config.augment.mixing:
        return None
    from cxrlt.data.mixing import build_mixer

    return build_mixer(config.augment.mixing)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _keep_earlier_log(files: StageFiles) -> None:
    """Move the interrupted attempt's log aside: Lightning's CSV logger deletes it when it restarts.

    The epochs logged before the interruption live on as the stage's
    earlier logs; `read_training_logs` reads them first.
    """
    if not is_writer() or not files.log.is_file():
        return
    os.replace(files.log, files.earlier_log(1 + len(files.earlier_logs())))
