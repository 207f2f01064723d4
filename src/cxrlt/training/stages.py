"""Resolve the stages of a run: what each one trains, with what, from where."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cxrlt.layout import RunFiles, StageFiles
from cxrlt.config import LossSpec, OptimizerSpec, RunConfig, SamplerSpec, ScheduleSpec, StageConfig

log = logging.getLogger(__name__)

# Decoupled classifier re-training (cRT, Kang et al.) samples class-balanced.
DECOUPLED_DEFAULT_SAMPLER = "cycle"


@dataclass(frozen=True)
class Stage:
    """Fully resolved settings of one stage (nothing left to inherit), and its folder's files."""

    index: int
    name: str
    files: StageFiles
    epochs: int
    image_size: int
    batch_size: int
    sampler: SamplerSpec
    loss: LossSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    freeze_backbone: bool
    reinit_head: bool
    tau_normalise: bool
    init_from: str

    @property
    def done(self) -> bool:
        """Whether the stage has already finished."""
        return self.files.done.is_file()

    def checkpoint(self, which: str) -> Path:
        """`best` or `last` checkpoint path."""
        return self.files.checkpoint(which)


def resolve_stages(config: RunConfig, run_dir: Path) -> list[Stage]:
    """Every stage of `config` with inherited settings filled in."""
    stages = [_resolve(config, stage, index, Path(run_dir)) for index, stage in enumerate(config.stage_list())]
    stored = config.data.images.stored
    for stage in stages:
        if stage.image_size > stored:
            log.warning(
                "stage %s trains at %d px from images stored at %d px: they are upsampled. For progressive "
                "resizing set data.images.store_size to the largest stage size (%d).",
                stage.name, stage.image_size, stored, max(s.image_size for s in stages),
            )
    return stages


def _resolve(config: RunConfig, stage: StageConfig, index: int, run_dir: Path) -> Stage:
    train = config.train
    default_sampler = (
        SamplerSpec(name=DECOUPLED_DEFAULT_SAMPLER) if stage.freeze_backbone else train.sampler
    )
    return Stage(
        index=index,
        name=stage.name,
        files=RunFiles(run_dir).stage(index, stage.name),
        epochs=stage.epochs or train.epochs,
        image_size=stage.image_size or config.data.images.size,
        batch_size=stage.batch_size or train.batch_size,
        sampler=stage.sampler or default_sampler,
        loss=stage.loss or config.loss,
        optimizer=stage.optimizer or train.optimizer,
        schedule=stage.schedule or train.schedule,
        freeze_backbone=stage.freeze_backbone,
        reinit_head=stage.freeze_backbone if stage.reinit_head is None else stage.reinit_head,
        tau_normalise=stage.tau_normalise,
        init_from=stage.init_from,
    )
