"""Shared test fixtures: the real data folder, offline hub settings, Ctrl-C for started commands."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRLT_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests never reach a model hub: there is no network besides package registries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A suite started in the background (`nohup pytest &` from a script) inherits SIGINT ignored, and so would every
# command it starts: the Ctrl-C tests would see their command run to its end instead of stopping. A handler here
# is reset to the default in each started process, which then turns Ctrl-C into KeyboardInterrupt as usual.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real NIH / CheXpert files); skips when absent."""
    if not (SHARED_DATA / "nih").is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set CXRLT_SHARED_DATA to point at it)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One intra-op torch thread for a test, restored afterwards so later tests see the default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
