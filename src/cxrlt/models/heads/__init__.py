"""Classification heads: feature map (B, C, H, W) -> logits (B, K).

`HEADS` holds every head: `linear` (`cxrlt.models.heads.linear`), `gcn`
(ML-GCN, `.gcn`), `experts` (RIDE experts, `.experts`) and `query`
(transformer decoder with label queries, `.query`). The registry and the
`Head` base class live in the leaf module `cxrlt.models.heads.base`; each
head module registers itself there, and importing this package imports them
all, so `HEADS` is complete whichever module was imported first.
"""

from cxrlt.models.heads.base import HEAD_CONTEXT, HEADS, CamUnsupported, Head, per_position
from cxrlt.models.heads import experts, gcn, linear, query  # noqa: F401  (they register themselves)
from cxrlt.models.heads.linear import LinearHead

__all__ = ["HEADS", "HEAD_CONTEXT", "CamUnsupported", "Head", "LinearHead", "per_position"]
