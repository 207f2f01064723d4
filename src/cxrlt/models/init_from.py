"""Start a model from another saved model (`model.init_from`): its backbone, and the shared classes' rows.

So a model pretrained on one label space (NIH, CheXpert) is fine-tuned on
another (CXR-LT): the whole backbone is taken; of the head, every
per-class tensor (first dimension = the number of classes: classifier
weights and biases, class embeddings) gets the rows of the classes both
label spaces share, matched by canonical name, and the head's other
parameters are taken where the heads are alike (same names and shapes).
The head's buffers (label graphs, statistics) are the new data's own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cxrlt.errors import ConfigError
from cxrlt.labels import canonical_key
from cxrlt.layout import ModelFiles, RunFiles
from cxrlt.models.card import ModelCard

log = logging.getLogger(__name__)


def initialise_from(model: nn.Module, source: str | Path, class_names: Sequence[str] | None) -> dict[str, int]:
    """Copy weights of the saved model at `source` into `model` (in place); returns what was taken.

    `class_names` are `model`'s classes (without them only the backbone
    and class-independent head parameters are taken).
    """
    from safetensors.torch import load_file

    files = ModelFiles.at(source)
    if not files.exist():
        unfinished = RunFiles(files.folder).config.is_file()
        raise ConfigError(f"model.init_from: {files.folder} " + (
            "is a run that has not finished (no saved model yet)" if unfinished else
            f"holds no saved model ({files.WEIGHTS} and {files.CARD}: a finished run folder or an export)"))
    card = ModelCard.read(files.card)
    state = load_file(str(files.weights))
    target = model.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    misfits = sorted(k for k, v in backbone.items() if k not in target or target[k].shape != v.shape)
    absent = sorted(k for k in target if k.startswith("backbone.") and k not in backbone)
    if misfits or absent:
        raise ConfigError(
            f"model.init_from: the backbone of {files.folder} ({card.model.backbone}) does not fit this model's "
            f"({getattr(model.backbone, 'name', '?')}): {len(misfits)} of its keys fit nothing here (e.g. "
            f"{', '.join(misfits[:3]) or '-'}), {len(absent)} keys here are not in it (e.g. {', '.join(absent[:3]) or '-'})"
        )
    update = dict(backbone)
    ours = [canonical_key(c) for c in class_names] if class_names else []
    theirs = {canonical_key(c): j for j, c in enumerate(card.classes)}
    shared = [(i, theirs[key]) for i, key in enumerate(ours) if key in theirs]
    parameters = {name for name, _ in model.named_parameters()}
    rows = 0
    for key, value in state.items():
        if not key.startswith("head.") or key not in parameters:
            continue
        mine = target[key]
        if ours and value.ndim and mine.ndim and value.shape[0] == len(card.classes) and \
                mine.shape[0] == len(ours) and value.shape[1:] == mine.shape[1:]:
            new = mine.clone()
            for i, j in shared:
                new[i] = value[j]
            update[key] = new
            rows += 1
        elif mine.shape == value.shape:
            update[key] = value
    model.load_state_dict({**target, **update})
    log.info("model.init_from %s: backbone (%d tensors), %d of %d classes' rows in %d per-class tensors",
             files.folder, len(backbone), len(shared), len(ours), rows)
    return {"backbone": len(backbone), "shared_classes": len(shared), "per_class_tensors": rows}
