"""tau-normalisation of the classifier (Kang et al.), tau tuned on validation F1 at the 0.5 threshold.

The linear head's logit of class k is w_k . x / ||w_k||^tau + b_k (bias not
scaled). For one class, tau multiplies w_k . x by the positive constant
||w_k||^-tau, so the class's ranking of the images, hence its ROC AUC and
average precision (and mAP, mean AUC), is the same for every tau: tuning on
them would pick noise (ties, then the smallest tau). What tau does move is
where each class crosses probability 0.5, against its bias: F1 at the fixed
0.5 threshold (and calibration). So tau is tuned on mean F1 at 0.5 over the
classes with a validation positive. Per-class thresholds tuned afterwards on
validation (`evaluation.threshold`) pick the same validation image as cut
whatever tau is, so they undo it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from cxrlt.progress import progress_bar

from cxrlt.data.dataset import ImageDataset
from cxrlt.data.transforms import eval_pipeline
from cxrlt.errors import ConfigError
from cxrlt.evaluation.metrics import UndefinedMetricWarning, f1_scores
from cxrlt.models.build import CxrModel
from cxrlt.inference.predict import default_device

log = logging.getLogger(__name__)

DEFAULT_TAUS = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0 ... 2.0
CRITERION = "mean F1 at threshold 0.5 over classes with a validation positive"


def mean_f1_at_half(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean F1 at threshold 0.5 over the classes with at least one positive (NaN labels masked); NaN if none."""
    positives = np.nansum(labels, axis=0) > 0
    if not positives.any():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(np.mean(f1_scores(labels[:, positives], probs[:, positives], 0.5)))


@torch.inference_mode()
def tune_tau(model: CxrModel, store: Sequence[np.ndarray], labels: np.ndarray, image_size: int,
             taus: Sequence[float] = DEFAULT_TAUS, batch_size: int = 64, progress: bool = True,
             eval_transforms: Sequence = ()) -> dict:
    """Pick tau maximising validation mean F1 at 0.5 (`mean_f1_at_half`) and set it on the head.

    Images go through the evaluation pipeline (`eval_transforms`, one view,
    no TTA). Features are computed once; each tau only re-weights the
    classifier. Ties go to the smallest tau (0 = the head unchanged), as
    does a validation split without any positive label (with a warning).
    Returns {"tau": best, "criterion": CRITERION, "scores": {tau: score}}.
    """
    head = model.head
    if not hasattr(head, "logits_from_pooled"):
        raise ConfigError(
            f"tau-normalisation needs a head with one weight vector per class (linear); {type(head).__name__} has none"
        )
    device = default_device()
    model = model.to(device).eval()
    loader = DataLoader(ImageDataset(store, labels, eval_pipeline(eval_transforms, image_size)), batch_size=batch_size)
    pooled = [head.pooled(model.features(images.to(device))).float()
              for images, _, _ in progress_bar(loader, enabled=progress, desc="tau features", leave=False)]
    features = torch.cat(pooled)
    scores = {}
    for tau in taus:
        probs = torch.sigmoid(head.logits_from_pooled(features, float(tau))).cpu().numpy()
        scores[float(tau)] = mean_f1_at_half(labels, probs)
    if all(np.isnan(score) for score in scores.values()):
        log.warning("tau-normalisation: no class has a positive validation label, so F1 at 0.5 is undefined for "
                    "every tau; the classifier is left as trained (tau 0)")
        best = 0.0
    else:
        best = max(scores, key=lambda t: (scores[t], -abs(t)))
    head.tau.fill_(best)
    return {"tau": best, "criterion": CRITERION, "scores": scores}
