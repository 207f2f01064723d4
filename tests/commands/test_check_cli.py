"""`cxrlt check CONFIG`: every bad image listed at once, grouped; exit codes; --out lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bad_inputs import BAD_FILES, make_dataset, png_bytes
from cxrlt.cli import main


@pytest.mark.parametrize("workers", ["0", "2"])
def test_check_lists_every_bad_file_with_its_reason_and_exits_1(tmp_path: Path, capsys, workers: str):
    config, good, bad = make_dataset(tmp_path)
    out = tmp_path / "bad.json"
    code = main(["check", str(config), "--workers", workers, "--no-progress", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    text = captured.out
    total = len(good) + len(bad)
    assert f"label table: {total} images, 2 classes" in text
    assert f"{len(bad)} of {total} images cannot be read ({len(bad)} distinct reasons)" in text
    for name, reason in BAD_FILES.items():
        assert reason in text
        assert str(tmp_path / "images" / name) in text
    for name in good:  # 16-bit and RGBA PNGs are readable
        assert name not in text
    report = json.loads(out.read_text())
    assert report["images"] == total
    listed = {Path(row["path"]).name: row for row in report["bad"]}
    assert set(listed) == set(BAD_FILES)
    for name, reason in BAD_FILES.items():
        assert listed[name]["image_id"] == name  # the csv source's id is the path
        assert reason in listed[name]["reason"]


def test_same_reason_is_grouped_and_counted(tmp_path: Path, capsys):
    config, good, _ = make_dataset(tmp_path, bad=False)
    labels = tmp_path / "labels.csv"
    with labels.open("a") as handle:
        for i in range(3):
            handle.write(f"gone{i}.png,q{i},train,1,0\n")
    assert main(["check", str(config), "--workers", "0", "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "3 of 9 images cannot be read (1 distinct reason)" in text
    assert "\n3 files: file not found\n" in text
    assert all(f"gone{i}.png" in text for i in range(3))


def test_clean_data_exits_0_and_writes_an_empty_csv(tmp_path: Path, capsys):
    config, good, _ = make_dataset(tmp_path, bad=False)
    out = tmp_path / "lists" / "bad.csv"
    assert main(["check", str(config), "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    assert f"all {len(good)} images are readable" in capsys.readouterr().out
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image_id", "path", "reason"] and frame.empty


def test_csv_out_lists_the_bad_rows(tmp_path: Path, capsys):
    config, _, bad = make_dataset(tmp_path)
    out = tmp_path / "bad.csv"
    assert main(["check", str(config), "--workers", "0", "--no-progress", "--out", str(out)]) == 1
    frame = pd.read_csv(out)
    assert sorted(frame["image_id"]) == sorted(bad)
    assert frame.set_index("image_id").loc["empty.png", "reason"] == "is empty (0 bytes)"


def test_bad_label_table_exits_2_before_reading_images(tmp_path: Path, capsys):
    config, _, _ = make_dataset(tmp_path)
    labels = tmp_path / "labels.csv"
    lines = labels.read_text().splitlines()
    lines[4] = "good03.png,p3,test,7,0"  # line 5 of the file: a label that is not 0 or 1
    labels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bad.json"
    code = main(["check", str(config), "--workers", "0", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cxrlt check: error: ") and str(labels) in err and "line 5" in err
    assert "'7'" in err and "other than 0, 1 or blank" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_override_and_config_errors(tmp_path: Path, capsys):
    config, _, _ = make_dataset(tmp_path, bad=False)
    assert main(["check", str(config), "--override", "data.images.colour=1"]) == 2
    assert "data.images.colour" in capsys.readouterr().err
    assert main(["check", str(config), "--out", str(tmp_path / "bad.txt")]) == 2
    assert "must be .json or .csv" in capsys.readouterr().err


def test_help_explains_exit_codes_and_skip_bad(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = capsys.readouterr().out
    assert "Exit status: 0" in text and "data.images.skip_bad" in text and "cxrlt check configs/" in text


# ------------------------------------------------------- training told to skip them
@pytest.fixture(scope="module")
def broken_synthetic(tmp_path_factory) -> dict:
    """A small synthetic data set with three unreadable images, and a tiny run config for it."""
    from cxrlt.data.synthetic import generate_dataset
    from tiny_runs import tiny_config

    root = tmp_path_factory.mktemp("broken")
    folder = generate_dataset(root / "synthetic", n_images=120, image_size=48, seed=3, progress=False)
    images = sorted((folder / "images").glob("*.png"))
    broken = {images[5]: b"", images[40]: images[40].read_bytes()[:100], images[77]: b"not an image"}
    for path, data in broken.items():
        path.write_bytes(data)
    raw = tiny_config(folder, epochs=1, limit_train_batches=2, limit_eval_batches=1, batch_size=16)
    raw["data"]["sources"][0]["n_images"] = 120
    return {"root": root, "raw": raw, "broken": sorted(str(p) for p in broken)}


def write_run_config(folder: Path, raw: dict, **images_options) -> Path:
    import yaml

    raw = {**raw, "data": {**raw["data"], "images": {**raw["data"]["images"], **images_options}}}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_check_then_training_skips_the_bad_images(broken_synthetic, tmp_path: Path, capsys):
    config = write_run_config(tmp_path, broken_synthetic["raw"], skip_bad=True)
    assert main(["check", str(config), "--workers", "0", "--no-progress"]) == 1
    listed = capsys.readouterr().out
    assert "3 of 120 images cannot be read" in listed and all(p in listed for p in broken_synthetic["broken"])

    run = tmp_path / "run"
    code = main(["train", str(config), "--out", str(run), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "data.images.skip_bad: leaving out 3 of 120 images that cannot be decoded" in captured.err
    assert all(p in captured.err for p in broken_synthetic["broken"])
    predicted = set(pd.read_csv(run / "predictions.csv")["image_id"]) | set(pd.read_csv(run / "predictions_val.csv")["image_id"])
    bad_ids = {Path(p).stem for p in broken_synthetic["broken"]}
    assert predicted and not predicted & bad_ids


def test_training_with_a_cache_skips_the_images_prepare_recorded_as_bad(broken_synthetic, tmp_path: Path, capsys):
    cache = tmp_path / "cache"
    strict = write_run_config(tmp_path, broken_synthetic["raw"], cache=str(cache))
    assert main(["prepare", str(strict), "--out", str(cache), "--workers", "0", "--quiet", "--skip-bad"]) == 0
    capsys.readouterr()
    # Without skip_bad the run refuses the cache's bad rows and says how to leave them out.
    code = main(["train", str(strict), "--out", str(tmp_path / "strict"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "data.images.skip_bad: true" in err and "Traceback" not in err
    skipping = write_run_config(tmp_path, broken_synthetic["raw"], cache=str(cache), skip_bad=True)
    code = main(["train", str(skipping), "--out", str(tmp_path / "run"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "leaving out 3 of 120 images" in captured.err


def test_bad_images_stop_training_before_the_first_epoch(broken_synthetic, tmp_path: Path, capsys):
    config = write_run_config(tmp_path, broken_synthetic["raw"])
    run = tmp_path / "run"
    code = main(["train", str(config), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("cxrlt train: error: ")):]
    assert lines[0].startswith("cxrlt train: error: 3 of the 120 images of the train, val and test splits "
                               "cannot be read")
    assert "data.images.skip_bad: true" in lines[0] and "Traceback" not in err
    assert sorted(line.strip().split(": ")[0] for line in lines[1:]) == broken_synthetic["broken"]
    assert not list(run.rglob("*.ckpt"))  # found before any training


def png_with_bad_image_data(pixels: np.ndarray) -> bytes:
    """A PNG whose IDAT chunk is not a deflate stream but carries a correct CRC.

    It passes the quick check (chunk structure and CRCs) and fails only when
    decoded: the one kind of damage a run meets in the middle of an epoch.
    """
    import struct
    import zlib

    data = png_bytes(pixels)
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start:start + 4])[0]
    garbage = bytes(range(256)) * (length // 256) + bytes(length % 256)
    chunk = struct.pack(">I", length) + b"IDAT" + garbage + struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    return data[:start] + chunk + data[start + 12 + length:]


def test_an_image_failing_in_a_dataloader_worker_is_named_without_a_traceback(tmp_path: Path, capsys):
    # DataLoader worker processes re-raise with the worker's traceback as the message; the CLI prints ours only.
    from cxrlt.config import parse_config
    from cxrlt.data.images import check_image
    from cxrlt.data.sources import load_table
    from cxrlt.data.synthetic import generate_dataset
    from tiny_runs import tiny_config

    folder = generate_dataset(tmp_path / "synthetic", n_images=120, image_size=48, seed=3, progress=False)
    raw = tiny_config(folder, epochs=1, limit_train_batches=8, limit_eval_batches=1, batch_size=16, num_workers=2)
    raw["data"]["sources"][0]["n_images"] = 120
    train = load_table(parse_config(raw).data).split("train").image_paths()
    bad = train[len(train) // 2]
    bad.write_bytes(png_with_bad_image_data(np.asarray(Image.open(bad))))
    assert check_image(bad, quick=True) is None and "cannot be decoded as PNG" in check_image(bad)
    config = write_run_config(tmp_path, raw)
    code = main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("cxrlt train: error: ") and "Traceback" not in err and "DataLoader" not in err
    assert f"{bad}: cannot be decoded as PNG" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()
