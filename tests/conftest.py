"""Shared test fixtures: the real data folder and offline hub settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRLT_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests never reach a model hub: there is no network besides package registries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
