"""Multi-label losses for long-tailed chest X-ray recognition (SPEC section 1).

Every loss is a `torch.nn.Module` called as `loss(logits, targets, mask=None)`:

- `logits`, `targets`: [batch, classes]; targets in [0, 1] (soft targets
  allowed) or NaN for a missing label. Missing entries, and entries where the
  optional boolean `mask` is False, are left out of the loss (exactly as if
  they were not there).
- One reduction for all losses, so that their values compare: the
  per-element loss is summed over classes and divided by the batch size (the
  number of images, whether or not some of their labels are missing).
  `loss.per_element(logits, targets, mask)` returns the [batch, classes]
  terms (0 where left out) for other reductions.
- Computed from logits with log-sigmoid in float32 (float64 for float64
  logits) with autocast off: finite values and gradients for logits of
  +-100, safe under bf16/fp16 autocast.
- `label_smoothing=s` replaces y by y (1 - s) + s / 2 (the Keras sense).
  Soft targets mix the positive and negative terms linearly,
  y L+ + (1 - y) L-, except for `focal`, which follows torchvision / Keras.
- Up-weighting (seed 004) on every loss: `upweight_classes` (names; needs
  `class_names`) times `upweight_factor`, and `upweight_worst_k`: after
  each validation the training loop calls
  `loss.update_class_factors(val_ap)` (one AP per class, NaN = undefined)
  and the k classes with the lowest AP are up-weighted until the next call.
- Deferred re-weighting (DRW, Cao et al.) on every loss: `drw_after: E`
  multiplies the terms by class-balanced weights (`drw_beta`, 0.9999) from
  the stage's epoch E on (the training loop calls `loss.set_epoch(epoch)`).

Registered losses (YAML `loss: {name: focal, alpha: 0.25, gamma: 2.0}`), one
module each, registered in `cxrlt.registry.LOSSES` and imported here:
`bce`, `weighted_bce`, `focal`, `asl`, `class_aware`,
`effective_number_focal`, `class_balanced`, `distribution_balanced`,
`logit_adjusted`, `ldam`. Losses weighted by label counts
need `class_counts` (per-class "positives" and "negatives" of the training
split; a mapping or an object with those attributes), supplied by the
toolkit, and raise ConfigError without them.

The RIDE diversity term for an experts head is `diversity_loss` and
`DiversityLoss` (not a registry entry: it takes the experts' logits, not one
logits matrix; the head adds it to the classification loss).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from cxrlt.losses.asl import AsymmetricLoss
from cxrlt.losses.base import ClassCounts, MultiLabelLoss, as_class_counts, effective_number_alpha, effective_number_weights
from cxrlt.losses.bce import BCELoss, WeightedBCELoss
from cxrlt.losses.class_aware import ClassAwareLoss, class_aware_class_weights
from cxrlt.losses.class_balanced import ClassBalancedLoss
from cxrlt.losses.diversity import DiversityLoss, diversity_loss
from cxrlt.losses.effective_number import EffectiveNumberFocalLoss
from cxrlt.losses.distribution_balanced import DistributionBalancedLoss
from cxrlt.losses.focal import FocalLoss
from cxrlt.losses.ldam import LDAMLoss
from cxrlt.losses.logit_adjusted import LogitAdjustedLoss
from cxrlt.registry import LOSSES


def build(name: str, class_counts: Any = None, class_names: Sequence[str] | None = None, **params: Any) -> nn.Module:
    """Build the registered loss `name` with its YAML parameters `params`.

    `class_counts` (training positives/negatives per class) and
    `class_names` are the data context; unknown names, unknown or mistyped
    parameters and missing counts raise ConfigError.
    """
    return LOSSES.build(name, context={"class_counts": class_counts, "class_names": class_names}, **params)


__all__ = [
    "AsymmetricLoss",
    "BCELoss",
    "ClassAwareLoss",
    "ClassBalancedLoss",
    "ClassCounts",
    "DistributionBalancedLoss",
    "DiversityLoss",
    "EffectiveNumberFocalLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MultiLabelLoss",
    "WeightedBCELoss",
    "as_class_counts",
    "build",
    "class_aware_class_weights",
    "diversity_loss",
    "effective_number_alpha",
    "effective_number_weights",
]
