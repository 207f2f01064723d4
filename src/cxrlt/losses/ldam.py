"""Label-distribution-aware margin loss (Cao et al., NeurIPS 2019) in its binary, per-class form."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from cxrlt.losses.base import CONTEXT, MultiLabelLoss, require_positives
from cxrlt.params import Positive
from cxrlt.registry import LOSSES


@LOSSES.register("ldam", context=CONTEXT)
class LDAMLoss(MultiLabelLoss):
    """-y log sigmoid(s (z - D_i)) - (1 - y) log sigmoid(-s z), D_i = C / n_i^(1/4) (docs/methods.md).

    C is set so that the largest margin (the rarest class's) is `max_margin`
    (0.5, the authors' default), n_i being the training positives of class i;
    `scale` is the s of the authors' code (30). As in the paper, the margin
    is on the true label only: a positive must clear D_i, a negative is plain
    BCE of the scaled logit. LDAM-DRW is this loss with `drw_after` set.
    """

    name = "ldam"

    def __init__(self, max_margin: Positive = 0.5, scale: Positive = 30.0, **options: Any):
        super().__init__(**options)
        self.max_margin, self.scale = float(max_margin), float(scale)
        positives = self._require_counts().positives
        require_positives(self, positives, "its margin C / n^(1/4) is infinite")
        margins = positives ** -0.25
        self.margins = margins * (self.max_margin / margins.max())

    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        margin = self._constant("margins", self.margins, x)
        positive = -F.logsigmoid(self.scale * (x - margin))
        negative = -F.logsigmoid(-self.scale * x)
        return y * positive + (1 - y) * negative

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [f"max_margin={self.max_margin}, scale={self.scale}", super().extra_repr()]))
