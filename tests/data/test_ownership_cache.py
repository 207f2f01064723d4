"""`cxrlt prepare --out DIR` writes and deletes only what it owns, one process at a time.

A folder is new, a cache marked by `cxrlt.json`, or a cache an earlier
cxrlt wrote (adopted); anything else is refused before a file is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import write_config, write_good_images, write_labels
from cxrlt.cli import main
from cxrlt.data.cache import read_cache_info
from cxrlt.data.images import load_image
from cxrlt.ownership import is_locked, read_marker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """(config, images folder, image names) of 6 small PNGs."""
    images = tmp_path / "images"
    names = write_good_images(images, 6)
    return write_config(tmp_path / "run.yaml", write_labels(tmp_path / "labels.csv", names), images), images, names


def prepare(config: Path, out: Path, *options: str) -> list[str]:
    return ["prepare", str(config), "--out", str(out), "--workers", "0", "--quiet", *options]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run `argv`: exit 2 and one paragraph on stderr holding `fragments`, no traceback."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("cxrlt prepare: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + captured.out
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.mark.parametrize("user_files", [
    {"index.json": b'{"mine": true}\n', "README.txt": b"my notes\n"},
    {"index.json": b'{"mine": true}\n'},  # used to be deleted and replaced by a cache, silently
    {"bad.json": b"{}", "pixels.npy": b"not cxrlt's", "done.npy": b"x"},
])
def test_a_folder_of_someone_elses_files_is_refused_untouched(tmp_path: Path, dataset, capsys, user_files):
    config = dataset[0]
    out = tmp_path / "mine"
    out.mkdir()
    for name, data in user_files.items():
        (out / name).write_bytes(data)
    for options in ((), ("--overwrite",)):
        refused(capsys, prepare(config, out, *options), str(out), "holds files cxrlt did not write",
                *sorted(user_files), "nothing was changed")
        assert files(out) == user_files  # byte-identical, and no marker or lock added


def test_a_cache_of_an_earlier_cxrlt_is_adopted_and_resumed(tmp_path: Path, dataset, capsys):
    config, images, names = dataset
    out = tmp_path / "cache"
    assert main(prepare(config, out)) == 0
    # What an earlier version left: the same files without the marker, the last two rows pending.
    for name in ("cxrlt.json", "cxrlt.lock"):
        (out / name).unlink()
    status = np.load(out / "done.npy")
    status[-2:] = 0
    np.save(out / "done.npy", status)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    capsys.readouterr()
    assert main(prepare(config, out)) == 0
    assert "decoded 2 images" in capsys.readouterr().out
    marker = read_marker(out)
    assert marker["kind"] == "cache"
    assert sorted(marker["entries"]) == ["bad.json", "done.npy", "index.json", "meta.json", "pixels.npy"]
    np.testing.assert_array_equal(np.load(out / "pixels.npy")[-1], load_image(images / names[-1], 16))


def test_an_earlier_cache_with_a_foreign_file_is_refused(tmp_path: Path, dataset, capsys):
    config = dataset[0]
    out = tmp_path / "cache"
    assert main(prepare(config, out)) == 0
    for name in ("cxrlt.json", "cxrlt.lock"):
        (out / name).unlink()
    (out / "notes.txt").write_text("mine")
    before = files(out)
    capsys.readouterr()
    refused(capsys, prepare(config, out, "--size", "24", "--overwrite"), "holds files cxrlt did not write",
            "notes.txt")
    assert files(out) == before


def test_overwrite_removes_only_what_cxrlt_wrote(tmp_path: Path, dataset, capsys):
    config, images, names = dataset
    out = tmp_path / "cache"
    assert main(prepare(config, out)) == 0
    (out / "notes.txt").write_bytes(b"kept\x00\xff")  # put there by the user later
    (out / "plots").mkdir()
    (out / "plots" / "a.png").write_bytes(b"figure")
    assert main(prepare(config, out, "--size", "24", "--overwrite")) == 0
    assert (out / "notes.txt").read_bytes() == b"kept\x00\xff" and (out / "plots" / "a.png").read_bytes() == b"figure"
    info = read_cache_info(out)
    assert info.complete and info.size == 24
    np.testing.assert_array_equal(np.load(out / "pixels.npy")[3], load_image(images / names[3], 24))


def test_a_cache_marker_of_another_kind_is_refused(tmp_path: Path, dataset, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "cxrlt.json").write_text(json.dumps({"kind": "run", "entries": ["model.pt"]}))
    (out / "model.pt").write_bytes(b"weights")
    before = files(out)
    refused(capsys, prepare(dataset[0], out, "--overwrite"), str(out), "holds a cxrlt run folder, not a cache")
    assert files(out) == before


# The first prepare: ~60 ms per image, so it holds the folder's lock for a few seconds.
SLOW = """
import sys, time
import cxrlt.data.cache as cache
from cxrlt.cli import main

real = cache.load_image

def slow(path, size):
    time.sleep(0.06)
    return real(path, size)

cache.load_image = slow
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_prepare_into_the_same_folder_stops_at_once(tmp_path: Path, capsys):
    images = tmp_path / "images"
    names = write_good_images(images, 40)
    config = write_config(tmp_path / "run.yaml", write_labels(tmp_path / "labels.csv", names), images)
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", SLOW, *prepare(config, out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "meta.json").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert is_locked(out), "the first prepare did not hold the lock"
    started = time.monotonic()
    refused(capsys, prepare(config, out), str(out), "in use by another cxrlt process", f"pid {first.pid}")
    assert time.monotonic() - started < 2
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert "decoded 40 images" in stdout  # the first run is unaffected
    pixels = np.load(out / "pixels.npy")
    for row in (0, 17, 39):
        np.testing.assert_array_equal(pixels[row], load_image(images / names[row], 16))
