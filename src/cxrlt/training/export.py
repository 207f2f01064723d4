"""Save and load a trained model without pickle: safetensors + JSON.

`model.safetensors` holds the weights; `model.json` holds what is needed to
rebuild the module (model config, classes, input size) and to use it well
(the stored size and evaluation transforms its inputs went through,
training positives per class for head/medium/tail groups, tuned
thresholds). Loading never executes code from the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cxrlt.config import ModelConfig
from cxrlt.data.transforms import EvalPipeline, eval_pipeline
from cxrlt.errors import ConfigError, InputError
from cxrlt.io import atomic_path, read_json, write_json
from cxrlt.models.build import CxrModel, build_model

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT_VERSION = 1
EVAL_TRANSFORMS = "eval_transforms"  # model.json key; absent (models saved before it): none


def saved_eval_pipeline(meta: dict[str, Any]) -> EvalPipeline:
    """The evaluation pipeline a saved model was evaluated with (its `model.json` as `meta`)."""
    return eval_pipeline(meta.get(EVAL_TRANSFORMS, ()), int(meta["image_size"]))


def export_model(model: CxrModel, folder: Path, model_config: ModelConfig, classes: list[str],
                 image_size: int, extra: dict[str, Any] | None = None) -> Path:
    """Write `folder/model.safetensors` and `folder/model.json` atomically."""
    folder = Path(folder)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(_unshare(state), str(tmp), metadata={"format": "cxrlt", "version": str(FORMAT_VERSION)})
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model_config.model_dump(mode="json"),
        "classes": list(classes),
        "image_size": int(image_size),
        **(extra or {}),
    }
    write_json(folder / META, meta)
    return folder / WEIGHTS


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; store copies instead."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        pointer = value.untyped_storage().data_ptr() if value.numel() else id(value)
        out[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return out


def load_model(path: str | Path, context: dict[str, Any] | None = None) -> tuple[CxrModel, dict[str, Any]]:
    """Load a model saved by `export_model` from its folder (or its .safetensors file)."""
    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(
            f"no saved model here: expected {WEIGHTS} and {META} (written at the end of `cxrlt train`)", folder
        )
    meta = read_json(folder / META)
    try:
        config = ModelConfig.model_validate(meta["model"])
        classes = list(meta["classes"])
    except Exception as exc:
        raise InputError(f"{META} is not a cxrlt model description ({exc})", folder / META) from None
    meta.setdefault(EVAL_TRANSFORMS, [])
    try:
        saved_eval_pipeline(meta)
    except ConfigError as exc:
        raise InputError(f"{EVAL_TRANSFORMS}: {exc}", folder / META) from None
    # No training labels: heads with label buffers (graph, embeddings) take them from the saved state.
    context = {"class_names": classes, **(context or {})}
    model = build_model(config, len(classes), meta.get("image_size"), context=context, pretrained=False)
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:
        raise InputError(f"cannot read the weights ({exc})", folder / WEIGHTS) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"weights do not fit the described model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})", folder / WEIGHTS
        )
    model.eval()
    return model, meta
