"""The LightningModule: one training stage of a multi-label classifier."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from torch import nn

from cxrlt.config import OptimizerSpec, ScheduleSpec
from cxrlt.errors import TrainingDiverged
from cxrlt.seeds import mix_seed
from cxrlt.evaluation.metrics import monitor_metrics

Mixer = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class ClassifierModule(L.LightningModule):
    """Trains `model` with `loss`; validates with mean AP and mean AUC.

    Randomness that is not keyed by sample (dropout, drop-path, batch mixing)
    is reseeded from (seed, epoch) at each epoch start, so a run resumed from
    an end-of-epoch checkpoint repeats exactly what an uninterrupted run does.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerSpec,
        schedule: ScheduleSpec,
        epochs: int,
        seed: int,
        freeze_backbone: bool = False,
        mixer: Mixer | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        self.model = model
        self.loss = loss
        self.optimizer_spec = optimizer
        self.schedule_spec = schedule
        self.epochs = epochs
        self.seed = seed
        self.freeze_backbone = freeze_backbone
        self.mixer = mixer
        if channels_last:
            # The layout that matters is the weights': a 1-channel input batch is the same in both layouts,
            # and convolutions with channels-last weights produce (and keep) channels-last activations.
            self.model.to(memory_format=torch.channels_last)
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_val: dict[str, Any] = {}
        if freeze_backbone:
            for parameter in self.model.backbone_parameters():
                parameter.requires_grad_(False)

    # ------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        torch.manual_seed(mix_seed(self.seed, self.current_epoch, self.global_rank))
        # Epoch-dependent losses (deferred re-weighting) follow the stage's epoch, also after a resume.
        set_epoch = getattr(self.loss, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        if self.freeze_backbone:
            # Frozen means frozen: BatchNorm statistics must not drift either.
            for module in self.model.feature_modules():
                module.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets, _ = batch
        if self.mixer is not None:
            generator = torch.Generator(device="cpu").manual_seed(
                mix_seed(self.seed, self.current_epoch, self.global_rank, batch_idx)
            )
            images, targets = self.mixer(images, targets, generator)
        # The head decides what it trains on: logits, or every expert's logits plus a diversity term.
        outputs = self.model(images, training_outputs=True)
        loss = self.model.training_loss(self.loss, outputs.float(), targets)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); training stopped. The last good checkpoint is kept; lower the learning "
                "rate, enable gradient clipping (train.gradient_clip) or check the labels."
            )
        # sync_dist: the epoch loss is the mean over every rank's batches, not rank 0's alone.
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images),
                 sync_dist=True)
        return loss

    # ---------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets, rows = batch
        probs = torch.sigmoid(self(images).float())
        self._val_outputs.append((probs.detach(), targets, rows))

    def on_validation_epoch_end(self) -> None:
        probs, targets, rows = self._gather_validation()
        if not np.isfinite(probs).all():
            # Raised before the checkpoint callbacks run: a diverged state is never saved.
            raise TrainingDiverged(
                f"the validation predictions after epoch {self.current_epoch} (step {self.global_step}) are not "
                "finite: the weights diverged although the training loss was finite; training stopped. The last "
                "good checkpoint is kept; lower the learning rate, enable gradient clipping (train.gradient_clip) "
                "or check the labels."
            )
        metrics = monitor_metrics(targets, probs)
        self.last_val = metrics
        # Computed from the gathered predictions, so identical on every rank: the mean over ranks is the value.
        self.log("val/map", metrics["map"], prog_bar=True, sync_dist=True)
        self.log("val/auc", metrics["auc"], prog_bar=True, sync_dist=True)
        update = getattr(self.loss, "update_class_factors", None)
        if callable(update) and not self.trainer.sanity_checking:
            update(metrics["ap_per_class"])

    def _gather_validation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probs = torch.cat([p for p, _, _ in self._val_outputs])
        targets = torch.cat([t for _, t, _ in self._val_outputs])
        rows = torch.cat([r for _, _, r in self._val_outputs])
        self._val_outputs = []
        if self.trainer.world_size > 1:
            probs, targets, rows = _all_gather_padded(self, probs, targets, rows)
        order = torch.argsort(rows)
        return probs[order].cpu().numpy(), targets[order].cpu().numpy(), rows[order].cpu().numpy()

    # ---------------------------------------------------------- optimisers
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_spec.build(params=params)
        # Lightning counts the optimiser steps from this rank's loader (its shard of the sampler), the batch
        # limit and accumulation: ceil(batches per rank / accumulate) per epoch, whatever the world size.
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, total_steps // self.epochs)
        factor = self.schedule_spec.build(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _all_gather_padded(module: L.LightningModule, probs, targets, rows):
    """Gather unequal shards from every rank (padded rows are marked -1)."""
    length = torch.tensor([len(rows)], device=rows.device)
    longest = int(module.all_gather(length).max())
    pad = longest - len(rows)
    if pad:
        probs = torch.cat([probs, probs.new_zeros(pad, probs.shape[1])])
        targets = torch.cat([targets, targets.new_zeros(pad, targets.shape[1])])
        rows = torch.cat([rows, rows.new_full((pad,), -1)])
    gathered = [module.all_gather(x).flatten(0, 1) for x in (probs, targets, rows)]
    keep = gathered[2] >= 0
    return gathered[0][keep], gathered[1][keep], gathered[2][keep]
