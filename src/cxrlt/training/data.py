"""The data of a run: label table with splits, training statistics, stores, loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from cxrlt.config import RunConfig, SamplerSpec
from cxrlt.data.dataset import ImageDataset, KeyedSampler, ShardSampler
from cxrlt.data.sources import load_table, source_positions
from cxrlt.data.stats import LabelStats
from cxrlt.data.store import open_store, screen_images
from cxrlt.data.table import LabelTable
from cxrlt.data.transforms import Pipeline, eval_pipeline
from cxrlt.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Label table of a run (with splits) and statistics of its training split.

    Statistics are computed once, from the training split only, and handed to
    whatever needs them (losses, samplers, graph heads, groups).
    """

    config: RunConfig
    table: LabelTable
    _stores: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "val"):
            if len(self.part(split)) == 0:
                raise InputError(
                    f"the {split} split is empty; check data.split (method {self.config.data.split.method!r}, "
                    f"val_fraction {self.config.data.split.val_fraction})"
                )

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in model output order."""
        return self.table.classes

    def part(self, split: str) -> LabelTable:
        """Rows of one split."""
        return self.table.split(split)

    @cached_property
    def train_stats(self) -> LabelStats:
        """Label statistics of the training split (the losses' class counts)."""
        return LabelStats.from_table(self.part("train"))

    @property
    def source_index(self) -> np.ndarray:
        """Which of `data.sources` (position) each row of the table comes from (recorded by `load_table`)."""
        return source_positions(self.table)

    def model_context(self) -> dict[str, Any]:
        """Data-derived inputs for heads: class names and the training labels (label graphs, embeddings)."""
        return {"class_names": list(self.classes), "train_labels": self.part("train").labels}

    def store(self, split: str, size: int) -> Any:
        """Pixels of one split at `size` (from the prepared cache when configured)."""
        key = (split, size)
        if key not in self._stores:
            images = self.config.data.images
            cache = images.cache if images.cache is not None and size == images.stored else None
            self._stores[key] = open_store(self.part(split), size, cache=cache)
        return self._stores[key]


def load_run_data(config: RunConfig) -> RunData:
    """Read the sources of `config`, assign splits, and find unreadable images before any training.

    Every image of the train, val and test splits is checked now
    (`screen_images`: the cache's bad list, or a quick scan of the files),
    so a bad file stops the run before the first epoch, not at test
    prediction; `data.images.skip_bad` leaves such images out instead.
    """
    images = config.data.images
    if images.cache is None:
        log.warning(
            "no prepared cache (data.images.cache): images are decoded from the original files every epoch. "
            "Run `cxrlt prepare CONFIG --out DIR` once and set data.images.cache=DIR for a much faster data path."
        )
    warn_whole_image_evaluation(config)
    table = screen_images(load_table(config.data), images.stored, cache=images.cache, skip_bad=images.skip_bad)
    return RunData(config, table)


def warn_whole_image_evaluation(config: RunConfig) -> None:
    """Warn when training keeps a fixed-size window of the stored image but evaluation sees all of it."""
    augment = config.augment
    narrowing = [spec.name for spec in augment.train
                 if getattr(spec.lookup().entry(spec.name).factory, "narrows_view", False)]
    if narrowing and not augment.eval:
        images = config.data.images
        log.warning(
            "augment.train has %s (a fixed-size window of the stored image) but augment.eval is empty: validation, "
            "test and predict see the whole %d-px stored image resized to %d px, a wider field of view than in "
            "training. Add e.g. augment.eval: [{name: center_crop, size: <the crop size>}] to evaluate on the view "
            "the model was trained on.", " and ".join(narrowing), images.stored, images.size,
        )


class StageDataModule(L.LightningDataModule):
    """Loaders of one stage; samplers know the rank and world size at creation."""

    def __init__(self, data: RunData, image_size: int, batch_size: int, sampler: SamplerSpec,
                 train_pipeline: Pipeline, num_workers: int, seed: int):
        super().__init__()
        self.data = data
        self.image_size = image_size
        self.batch_size = batch_size
        self.sampler_spec = sampler
        self.train_pipeline = train_pipeline
        self.num_workers = num_workers
        self.seed = seed

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _store_size(self) -> int:
        return self.data.config.data.images.stored

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        train = self.data.part("train")
        weights = self.data.config.data.source_weights
        if weights is None:
            sampler = self.sampler_spec.build(
                labels=train.labels, num_samples=len(train), seed=self.seed, rank=rank, world_size=world
            )
        else:
            from cxrlt.data.source_sampling import SourceWeightedSampler

            is_train = (self.data.table.meta["split"] == "train").fillna(False).to_numpy(dtype=bool)
            sampler = SourceWeightedSampler(
                train.labels, self.data.source_index[is_train], weights,
                lambda labels, seed: self.sampler_spec.build(labels=labels, num_samples=None, seed=seed, rank=0,
                                                             world_size=1),
                num_samples=len(train), seed=self.seed, rank=rank, world_size=world,
                names=[f"data.sources.{i} ({spec.name})" for i, spec in enumerate(self.data.config.data.sources)],
            )
        dataset = ImageDataset(self.data.store("train", self._store_size()), train.labels, self.train_pipeline,
                               seed=self.seed)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=KeyedSampler(sampler, rank),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=len(sampler) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        val = self.data.part("val")
        dataset = ImageDataset(self.data.store("val", self._store_size()), val.labels,
                               eval_pipeline(self.data.config.augment.eval, self.image_size))
        return DataLoader(dataset, batch_size=self.batch_size, sampler=ShardSampler(len(val), rank, world),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())
