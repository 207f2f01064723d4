"""Small saved models of every head, and images at their input size, for the export and hub tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cxrlt.config import ModelConfig
from cxrlt.inference.saved_model import export_model
from cxrlt.models.build import build_model
from cxrlt.models.card import ModelCard
from cxrlt.registry import HEADS

CLASSES = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Edema", "Mass"]
LABELS = (np.random.default_rng(0).random((200, 5)) < [0.4, 0.2, 0.3, 0.1, 0.05]).astype(np.float32)
SIZE = 32
# Settings per head variant; a head registered later without an entry here is exported with its defaults.
VARIANTS = {
    "linear": {"name": "linear"},
    "gcn": {"name": "gcn", "embeddings": {"dim": 8}},
    "experts": {"name": "experts", "experts": 2},
    "experts_mha": {"name": "experts", "experts": 2, "classifier": "gcn", "embeddings": {"dim": 8}, "mha": "joint",
                    "mha_heads": 4},
    "query": {"name": "query", "dim": 16, "layers": 1, "heads": 4, "ffn": 32, "embeddings": {"dim": 8}},
}
HEAD_CASES = {**VARIANTS, **{name: {"name": name} for name in HEADS.names() if name not in
                             {spec["name"] for spec in VARIANTS.values()}}}


def saved_model(folder, head: dict, thresholds=None):
    """A saved model of `head` on resnet10t with every weight moved off its initial value (all paths count)."""
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet10t", head=head)
    model = build_model(config, len(CLASSES), SIZE, context={"class_names": CLASSES, "train_labels": LABELS}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    card = ModelCard(model=config, classes=CLASSES, image_size=SIZE, thresholds=thresholds,
                     train_positives=[int(n) for n in LABELS.sum(0)], groups=["head", "head", "medium", "tail", "tail"])
    export_model(model, folder, card)
    return folder


# A three-class linear model stored at 64 px and read at 48 (the resize every reader of a saved model applies),
# for the `predict` and `cam` command tests.
COMMAND_CLASSES = ["Atelectasis", "Effusion", "Hernia"]


def command_model(folder, thresholds=None):
    """(folder, model): a resnet10t of `COMMAND_CLASSES` saved at image_size 48, stored_size 64."""
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet10t")
    model = build_model(config, len(COMMAND_CLASSES)).eval()
    export_model(model, folder, ModelCard(model=config, classes=COMMAND_CLASSES, image_size=48, stored_size=64,
                                          thresholds=thresholds))
    return folder, model


def write_png(path, seed, shape=(80, 96)):
    """A noise PNG of `shape` (not the model's size: readers must resize it)."""
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)


def image_files(folder, n=3):
    """PNGs already at the model's input size: their gray levels are exactly the graph's input."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    # Different brightness per image: noise alone pools to almost the same features.
    pixels = (rng.integers(0, 256, (n, SIZE, SIZE)) * (np.arange(1, n + 1) / n)[:, None, None]).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"img{i}.png")
    return folder, pixels[:, None].astype(np.float32)
