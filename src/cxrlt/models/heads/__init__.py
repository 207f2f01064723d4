"""Classification heads: feature map (B, C, H, W) -> logits (B, K).

One module per head: `linear` (`cxrlt.models.heads.linear`), `gcn` (ML-GCN,
`.gcn`), `experts` (RIDE experts, `.experts`) and `query` (transformer
decoder with label queries, `.query`). Each registers itself in
`cxrlt.registry.HEADS`; importing this package imports them all (the
registry does so the first time it is read). The `Head` base class lives in
`cxrlt.models.heads.base`.
"""

from cxrlt.models.heads.base import HEAD_CONTEXT, CamUnsupported, Head, per_position
from cxrlt.models.heads import experts, gcn, linear, query  # noqa: F401  (they register themselves)
from cxrlt.models.heads.linear import LinearHead

__all__ = ["HEAD_CONTEXT", "CamUnsupported", "Head", "LinearHead", "per_position"]
