"""tau-normalisation of the classifier (Kang et al.), tau tuned on validation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from cxrlt.progress import progress_bar

from cxrlt.data.dataset import ImageDataset
from cxrlt.data.transforms import Pipeline
from cxrlt.errors import ConfigError
from cxrlt.evaluation.metrics import monitor_metrics
from cxrlt.models.build import CxrModel
from cxrlt.training.predict import default_device

DEFAULT_TAUS = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0 ... 2.0


@torch.inference_mode()
def tune_tau(model: CxrModel, store: Sequence[np.ndarray], labels: np.ndarray, image_size: int,
             monitor: str = "map", taus: Sequence[float] = DEFAULT_TAUS, batch_size: int = 64,
             progress: bool = True) -> dict:
    """Pick tau maximising the validation `monitor` ("map" or "auc") and set it on the head.

    Image features are computed once; each tau only re-weights the classifier.
    Returns {"tau": best, "scores": {tau: score}}.
    """
    head = model.head
    if not hasattr(head, "logits_from_pooled"):
        raise ConfigError(
            f"tau-normalisation needs a head with one weight vector per class (linear); {type(head).__name__} has none"
        )
    device = default_device()
    model = model.to(device).eval()
    loader = DataLoader(ImageDataset(store, labels, Pipeline([], image_size)), batch_size=batch_size)
    pooled = [head.pooled(model.features(images.to(device))).float()
              for images, _, _ in progress_bar(loader, enabled=progress, desc="tau features", leave=False)]
    features = torch.cat(pooled)
    scores = {}
    for tau in taus:
        probs = torch.sigmoid(head.logits_from_pooled(features, float(tau))).cpu().numpy()
        scores[float(tau)] = float(monitor_metrics(labels, probs)[monitor])
    best = max(scores, key=lambda t: (scores[t], -abs(t)))
    head.tau.fill_(best)
    return {"tau": best, "monitor": monitor, "scores": scores}
