"""The prepared cache is the default fast path: set data.images.cache and training reads it, nothing else."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxrlt.cli import main as cli
from cxrlt.config import SamplerSpec, parse_config
from cxrlt.data.store import CacheStore, DecodingStore
from cxrlt.data.transforms import build_pipeline
from cxrlt.training.data import StageDataModule, load_run_data

SLOW_PATH_WARNING = "no prepared cache (data.images.cache)"


def run_config(data_dir: Path, cache: Path | None = None) -> dict:
    """A small synthetic run (240 films at 48 px); `cache` sets data.images.cache."""
    images = {"size": 48, **({"cache": str(cache)} if cache else {})}
    return {
        "name": "fast-path",
        "data": {
            "sources": [{"name": "synthetic", "out": str(data_dir), "n_images": 240, "image_size": 48, "seed": 5}],
            "split": {"method": "random", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
            "images": images,
        },
        "model": {"backbone": "resnet10t"},
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """Synthetic films and a cache made by `cxrlt prepare` (one process)."""
    root = tmp_path_factory.mktemp("fast-path")
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(root / "films")))
    assert cli(["prepare", str(config), "--out", str(root / "cache"), "--workers", "1", "--quiet"]) == 0
    return root / "films", root / "cache"


def test_configured_cache_is_used_with_no_other_flag_and_no_warning(prepared, caplog):
    films, cache = prepared
    with caplog.at_level(logging.WARNING, logger="cxrlt"):
        data = load_run_data(parse_config(run_config(films, cache)))
    assert SLOW_PATH_WARNING not in caplog.text
    module = StageDataModule(data, 48, 16, SamplerSpec(name="instance"), build_pipeline([], 48), num_workers=0, seed=0)
    train_store = module.train_dataloader().dataset.store
    assert isinstance(train_store, CacheStore) and Path(train_store.cache_dir) == cache.resolve()
    assert isinstance(module.val_dataloader().dataset.store, CacheStore)
    # the cache holds exactly what decoding the originals gives
    decoding = DecodingStore(data.part("train").image_paths(), 48)
    for row in (0, 7, len(decoding) - 1):
        np.testing.assert_array_equal(train_store[row], decoding[row])


def test_decoding_originals_warns(prepared, caplog):
    films, _ = prepared
    with caplog.at_level(logging.WARNING, logger="cxrlt"):
        data = load_run_data(parse_config(run_config(films)))
    assert SLOW_PATH_WARNING in caplog.text and "cxrlt prepare" in caplog.text
    assert isinstance(data.store("train", 48), DecodingStore)
