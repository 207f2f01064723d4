"""Save and load a trained model without pickle: safetensors weights + a typed model card (JSON).

The weights file holds the weights; the model card
(`cxrlt.models.card.ModelCard`, saved as `model.json`; file names in
`cxrlt.layout.ModelFiles`) says how to rebuild the module and how to use it
as it was evaluated. Loading never executes code from the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cxrlt.errors import InputError
from cxrlt.io import atomic_path
from cxrlt.layout import ModelFiles
from cxrlt.models.build import CxrModel, build_model
from cxrlt.models.card import FORMAT_VERSION, ModelCard

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
    """Load a model saved by `export_model` from its folder (or its weights or card file, or `hf-hub:OWNER/NAME`)."""
    from cxrlt.inference.hub import local_model

    path = local_model(path)
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
