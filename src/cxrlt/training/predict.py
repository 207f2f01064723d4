"""Batch inference: probabilities for every image of a store."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from cxrlt.progress import progress_bar

from cxrlt.data.dataset import ImageDataset
from cxrlt.data.transforms import Pipeline


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    store: Sequence[np.ndarray],
    image_size: int,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
    description: str = "predict",
) -> np.ndarray:
    """Sigmoid probabilities (images x classes) of `model` on every image of `store`."""
    device = device or default_device()
    model = model.to(device).eval()
    dataset = ImageDataset(store, np.zeros((len(store), 0), np.float32), Pipeline([], image_size))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    outputs = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with autocast:
        for images, _, _ in progress_bar(loader, enabled=progress, desc=description, leave=False):
            outputs.append(torch.sigmoid(model(images.to(device, non_blocking=True)).float()).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), np.float32)

