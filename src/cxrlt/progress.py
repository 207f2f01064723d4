"""Progress bars for long work, silenced per call or for the whole process.

`cxrlt ... --no-progress` sets CXRLT_NO_PROGRESS=1, which turns off every
bar of the toolkit (including those in worker processes), so logs of batch
jobs stay readable.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from tqdm.auto import tqdm

ENV_DISABLE = "CXRLT_NO_PROGRESS"


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar, disabled when `enabled` is False or CXRLT_NO_PROGRESS=1."""
    return tqdm(iterable, disable=not enabled or os.environ.get(ENV_DISABLE) == "1", **kwargs)
