"""The model card: everything `model.json` says about a saved model, typed.

How to rebuild the module (model config, classes, input size) and how to
use it as it was evaluated (the stored size and evaluation transforms its
inputs went through, test-time augmentation, tuned thresholds,
temperature, training positives and head / medium / tail groups). It is
read into and written from `ModelCard` only; the weights beside it are
`cxrlt.inference.saved_model`'s business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cxrlt.config import ModelConfig
from cxrlt.data.transforms import EvalPipeline, eval_pipeline
from cxrlt.errors import ConfigError, InputError
from cxrlt.io import read_json, write_json
from cxrlt.labels import canonical_key
from cxrlt.layout import ModelFiles
from cxrlt.registry import format_validation_error

FORMAT_VERSION = 1


class ModelCard(BaseModel):
    """Everything `model.json` says about a saved model; it is read into and written from this class only."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    model: ModelConfig
    classes: list[str] = Field(min_length=1)
    image_size: int = Field(ge=1, description="model input size (square)")
    stored_size: int | None = Field(None, ge=1, description="size images were stored at before the evaluation "
                                    "transforms (models saved before it was recorded: the input size)")
    eval_transforms: list[dict[str, Any]] = Field(default_factory=list,
                                                  description="augment.eval of the run (deterministic transforms)")
    tta: list[str] = Field(default_factory=list, description="test-time augmentation the thresholds were tuned with")
    tta_merge: Literal["arithmetic", "geometric"] = "arithmetic"
    thresholds: list[float] | None = Field(None, description="per-class decision thresholds tuned on validation")
    temperature: float | None = Field(None, description="temperature fitted on validation (evaluation.temperature)")
    tau_normalisation: dict[str, Any] | None = None
    train_positives: list[int] | None = Field(None, description="training positives per class")
    groups: list[Literal["head", "medium", "tail"]] | None = Field(None, description="group of each class")

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        if self.stored_size is None:
            self.stored_size = self.image_size
        for name in ("thresholds", "train_positives", "groups"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.classes):
                raise ValueError(f"{name} has {len(values)} values for {len(self.classes)} classes")
        return self

    def eval_pipeline(self) -> EvalPipeline:
        """The deterministic transforms (and resize) the model's inputs went through in evaluation."""
        return eval_pipeline(self.eval_transforms, self.image_size)

    def decision_thresholds(self) -> list[float]:
        """The tuned thresholds, or 0.5 per class when the model has none."""
        return list(self.thresholds) if self.thresholds is not None else [0.5] * len(self.classes)

    def per_class(self, field: str, classes: Sequence[str]) -> np.ndarray | None:
        """A per-class field (`thresholds`, `train_positives`) in the order of `classes`, matched by canonical name.

        None when the card has no such values or its classes are not `classes`.
        """
        values = getattr(self, field)
        position = {canonical_key(name): j for j, name in enumerate(self.classes)}
        if values is None or len(classes) != len(self.classes) or any(canonical_key(c) not in position
                                                                      for c in classes):
            return None
        return np.array([values[position[canonical_key(c)]] for c in classes], dtype=np.float64)

    def write(self, folder: str | Path) -> Path:
        """Save as the folder's model card (atomic)."""
        return write_json(ModelFiles(Path(folder)).card, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: str | Path) -> "ModelCard":
        """Read a model card file, or the card of a model folder (InputError naming what is wrong)."""
        path = Path(path)
        if path.is_dir():
            path = ModelFiles(path).card
        raw = read_json(path)
        try:
            card = cls.model_validate(raw)
            card.eval_pipeline()
        except ValidationError as exc:
            raise InputError(f"not a cxrlt model card: {format_validation_error(exc)}", path) from None
        except ConfigError as exc:
            raise InputError(f"eval_transforms: {exc}", path) from None
        return card




def find_card(path: str | Path) -> Path | None:
    """The model card that `path` is, that the folder `path` holds, or that lies beside the file `path`."""
    path = Path(path)
    for candidate in (path, ModelFiles(path).card, ModelFiles(path.parent).card):
        if candidate.name == ModelFiles.CARD and candidate.is_file():
            return candidate
    return None
