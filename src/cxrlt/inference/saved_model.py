"""Save and load a trained model without pickle: safetensors weights + a typed model card (JSON).

The weights file holds the weights; the model card (`ModelCard`, saved as
`model.json`; file names in `cxrlt.layout.ModelFiles`) holds what is needed
to rebuild the module (model config, classes, input size) and to use it as
it was evaluated (the stored size and evaluation transforms its inputs went
through, test-time augmentation, tuned thresholds, temperature, training
positives and head / medium / tail groups). Loading never executes code
from the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file

from cxrlt.config import ModelConfig
from cxrlt.data.transforms import EvalPipeline, eval_pipeline
from cxrlt.errors import ConfigError, InputError
from cxrlt.io import atomic_path, read_json, write_json
from cxrlt.layout import ModelFiles
from cxrlt.models.build import CxrModel, build_model
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


def export_model(model: CxrModel, folder: Path, card: ModelCard) -> Path:
    """Write the weights and the model card of `model` into `folder` atomically; return the weights file."""
    files = ModelFiles(Path(folder))
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(files.weights) as tmp:
        save_file(_unshare(state), str(tmp), metadata={"format": "cxrlt", "version": str(FORMAT_VERSION)})
    card.write(files.folder)
    return files.weights


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; store copies instead."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        pointer = value.untyped_storage().data_ptr() if value.numel() else id(value)
        out[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return out


def load_model(path: str | Path, context: dict[str, Any] | None = None) -> tuple[CxrModel, ModelCard]:
    """Load a model saved by `export_model` from its folder (or its weights or card file)."""
    files = ModelFiles.at(Path(path).parent if Path(path).suffix == ".json" else path)
    if not files.exist():
        raise InputError(f"no saved model here: expected {files.WEIGHTS} and {files.CARD} (written at the end of "
                         "`cxrlt train`)", files.folder)
    card = ModelCard.read(files.card)
    # No training labels: heads with label buffers (graph, embeddings) take them from the saved state.
    context = {"class_names": list(card.classes), **(context or {})}
    model = build_model(card.model, len(card.classes), card.image_size, context=context, pretrained=False)
    try:
        state = load_file(str(files.weights))
    except Exception as exc:
        raise InputError(f"cannot read the weights ({exc})", files.weights) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"weights do not fit the described model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})", files.weights
        )
    model.eval()
    return model, card
