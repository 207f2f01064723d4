"""Untrusted files: loading never executes code; names from data files never
decide where a command writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bad_inputs import png_bytes, write_config, write_good_images, write_labels
from cxrlt.cli import main
from cxrlt.errors import InputError
from cxrlt.training.checkpoints import load_checkpoint
from tiny_runs import tiny_config


class Exploit:
    """Unpickling this creates `marker` (stands in for any code an attacker wants run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint whose unpickling would run code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "global_step": 1, "state_dict": {"model.w": torch.zeros(2)}, "hook": Exploit(marker)}, path)
    return path


def test_crafted_training_checkpoint_is_refused_without_running_its_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "last.ckpt", marker)
    with pytest.raises(InputError, match="refused to load this checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "weights_only=True" in str(info.value)
    assert not marker.exists()
    # The same file opened with plain pickle semantics would have run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_checkpoint_still_loads(tmp_path: Path):
    path = tmp_path / "good.ckpt"
    torch.save({"epoch": 3, "state_dict": {"model.w": torch.arange(3.0)}}, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["state_dict"]["model.w"].tolist() == [0.0, 1.0, 2.0]


def test_corrupt_and_missing_checkpoints_are_input_errors(tmp_path: Path):
    corrupt = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(1000)}}, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:500])
    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(corrupt)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.ckpt")


def test_resume_refuses_a_crafted_last_checkpoint(tmp_path: Path, capsys):
    raw = tiny_config(tmp_path / "synthetic", epochs=1, limit_train_batches=1, limit_eval_batches=1)
    raw["data"]["sources"][0]["n_images"] = 120
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    marker = tmp_path / "pwned"
    last = crafted_checkpoint(run / "stages/01-main/checkpoints/last.ckpt", marker)
    code = main(["train", "--resume", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"cxrlt train: error: {last}: refused to load this checkpoint") and "Traceback" not in err
    assert not marker.exists()
    assert not (run / "model.safetensors").exists() and not (run / "stages/01-main/done.json").exists()


def test_pickled_arrays_in_a_prepared_cache_are_refused(tmp_path: Path, capsys):
    images = tmp_path / "images"
    names = write_good_images(images, 4)
    config = write_config(tmp_path / "run.yaml", write_labels(tmp_path / "labels.csv", names), images)
    cache = tmp_path / "cache"
    assert main(["prepare", str(config), "--out", str(cache), "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    marker = tmp_path / "pwned"
    with open(cache / "done.npy", "wb") as handle:  # an object array: np.save pickles it
        np.save(handle, np.array([Exploit(marker)] * 4, dtype=object), allow_pickle=True)
    from cxrlt.data.cache import read_cache_info

    with pytest.raises(InputError, match="done.npy is unreadable"):
        read_cache_info(cache)
    assert not marker.exists()


# ------------------------------------------------------------------ paths in CSVs
def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, Path]:
    """A label CSV whose paths climb out of the image folder or are absolute."""
    world = tmp_path / "world"
    images = world / "project" / "images"
    write_good_images(images, 3)
    outside = world / "elsewhere.png"  # an existing image outside the image folder
    outside.write_bytes(png_bytes(np.full((20, 20), 90, np.uint8)))
    names = ["good00.png", "good01.png", "good02.png", "../../elsewhere.png", str(outside),
             "../../../../../../../../etc/cxrlt-test-escape.png", "/tmp/../tmp/cxrlt-absolute-escape.png"]
    labels = write_labels(world / "project" / "labels.csv", names)
    config = write_config(world / "project" / "run.yaml", labels, images)
    return {"world": world, "config": config, "outside": outside, "out": world / "project" / "out"}


def assert_only_out_changed(before: dict, after: dict, out: Path) -> None:
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed, "the command wrote nothing at all"
    assert all(Path(path).is_relative_to(out) for path in changed), sorted(changed)


@pytest.mark.parametrize("command", ["prepare", "check"])
def test_paths_in_a_csv_cannot_make_data_commands_write_outside_out(hostile, capsys, command: str):
    before = snapshot(hostile["world"])
    out = hostile["out"]
    if command == "prepare":
        argv = ["prepare", str(hostile["config"]), "--out", str(out / "cache"), "--workers", "0", "--quiet", "--skip-bad"]
    else:
        argv = ["check", str(hostile["config"]), "--out", str(out / "bad.json"), "--workers", "0", "--no-progress"]
    code = main(argv)
    text = capsys.readouterr().out
    assert code == (0 if command == "prepare" else 1)
    assert_only_out_changed(before, snapshot(hostile["world"]), out)
    assert not Path("/etc/cxrlt-test-escape.png").exists() and not Path("/tmp/cxrlt-absolute-escape.png").exists()
    # the two names that point nowhere are reported as unreadable, never created
    assert "2 images could not be decoded" in text or "2 of 7 images cannot be read" in text


def test_paths_in_a_csv_cannot_make_stats_write_outside_out(hostile, capsys):
    before = snapshot(hostile["world"])
    out = hostile["out"]
    code = main(["stats", "--config", str(hostile["config"]), "--json", str(out / "stats.json"),
                 "--plots", str(out / "plots")])
    assert code == 0, capsys.readouterr().err
    assert_only_out_changed(before, snapshot(hostile["world"]), out)


def test_safe_name_is_the_guard_for_names_from_data(tmp_path: Path):
    from cxrlt.io import safe_name

    os.symlink(tmp_path.parent, tmp_path / "link")
    for name in ("../x.png", "a/../../x.png", "/etc/passwd", str(tmp_path.parent / "x.png"), "link/x.png", "..", ""):
        path = tmp_path / safe_name(name)
        assert path.parent == tmp_path and not path.is_symlink() and path.name not in ("", ".", "..")
