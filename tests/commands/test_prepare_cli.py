"""`cxrlt prepare` end to end, with a stand-in `cxrlt.data.sources` (one test source)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import cxrlt.data
from cxrlt.cli import main
from cxrlt.data.cache import read_cache_info
from cxrlt.data.images import load_image
from cxrlt.data.table import LabelTable
from cxrlt.registry import KINDS, Registry


def folder_table(root: str) -> LabelTable:
    """Every PNG in `root`, one class, ids = file stems."""
    names = sorted(p.name for p in Path(root).glob("*.png"))
    meta = pd.DataFrame({"image_id": [Path(n).stem for n in names], "path": names})
    return LabelTable(meta, np.zeros((len(names), 1), np.float32), ("Finding",), Path(root))


@pytest.fixture
def sources(monkeypatch):
    """Install a minimal `cxrlt.data.sources`: a `folder` source and `load_table`."""
    registry = Registry("source")

    @registry.register("folder")
    def folder(root: str) -> LabelTable:
        return folder_table(root)

    monkeypatch.setitem(KINDS, "source", registry)
    module = types.ModuleType("cxrlt.data.sources")
    module.load_table = lambda data: data.sources[0].build()
    monkeypatch.setitem(sys.modules, "cxrlt.data.sources", module)
    monkeypatch.setattr(cxrlt.data, "sources", module, raising=False)
    return module


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + i, 48), dtype=np.uint8)).save(folder / f"x{i}.png")
    return folder


def write_config(tmp_path: Path, images: Path, **image_options) -> Path:
    config = {"name": "cli", "data": {"sources": [{"name": "folder", "root": str(images)}], "images": image_options}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_prepare_then_up_to_date(tmp_path: Path, images: Path, sources, capsys):
    config = write_config(tmp_path, images, size=32)
    out = tmp_path / "cache"
    assert main(["prepare", str(config), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "decoded 5 images in" in printed and "images/s" in printed and "32 x 32" in printed
    info = read_cache_info(out)
    assert info.complete and info.size == 32 and info.image_ids == [f"x{i}" for i in range(5)]
    pixels = np.load(out / "pixels.npy")
    np.testing.assert_array_equal(pixels[4], load_image(images / "x4.png", 32))
    assert main(["prepare", str(config), "--out", str(out), "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_size_defaults_to_store_size_and_mismatch_needs_overwrite(tmp_path: Path, images: Path, sources, capsys):
    config = write_config(tmp_path, images, size=32, store_size=40)
    out = tmp_path / "cache"
    assert main(["prepare", str(config), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    assert read_cache_info(out).size == 40
    capsys.readouterr()
    assert main(["prepare", str(config), "--out", str(out), "--size", "24", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "prepared at 40 x 40 pixels, not 24 x 24" in error and "--overwrite" in error
    assert "Traceback" not in error
    assert main(["prepare", str(config), "--out", str(out), "--size", "24", "--overwrite", "--quiet"]) == 0
    assert read_cache_info(out).size == 24


def test_bad_image_listed_then_skipped(tmp_path: Path, images: Path, sources, capsys):
    (images / "x2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)  # a PNG cut short
    config = write_config(tmp_path, images, size=16)
    out = tmp_path / "cache"
    assert main(["prepare", str(config), "--out", str(out), "--workers", "1", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "1 of 5 images cannot be decoded" in error and str(images / "x2.png") in error
    assert main(["prepare", str(config), "--out", str(out), "--workers", "1", "--quiet", "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    # The good four were kept: only the bad one was tried again.
    assert "decoded 1 image in" in printed and "4 were done by an earlier run" in printed
    assert "1 image could not be decoded and is recorded as bad" in printed
    assert read_cache_info(out).bad.keys() == {"x2"}


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text and "cxrlt prepare" in text and "--skip-bad" in text


def test_config_errors_name_the_key(tmp_path: Path, images: Path, sources, capsys):
    config = write_config(tmp_path, images, size=8)
    assert main(["prepare", str(config), "--out", str(tmp_path / "cache")]) == 2
    error = capsys.readouterr().err
    assert f"{config}: data.images.size" in error and "greater than or equal to 16" in error
    no_data = tmp_path / "empty.yaml"
    no_data.write_text("name: x\n")
    assert main(["prepare", str(no_data), "--out", str(tmp_path / "cache")]) == 2
    assert "no `data` section" in capsys.readouterr().err
