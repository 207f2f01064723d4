"""A full disk stops `cxrlt prepare` with "no space left on ...", never a Bus error, and the cache resumes.

The real-disk tests mount a 1 MiB tmpfs (root only; they skip elsewhere);
the others stand in for the kernel's answers with monkeypatching.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cxrlt.data.cache as cache_module
from bad_inputs import write_config, write_good_images, write_labels
from cxrlt.cli import main
from cxrlt.data.cache import read_cache_info
from cxrlt.data.images import load_image

REPO = Path(__file__).resolve().parents[2]
SIZE = 128  # 40 images x 128 x 128 = 655 kB of pixels: most of the 1 MiB disk


def dataset(root: Path, n: int) -> tuple[Path, Path, list[str]]:
    images = root / "images"
    names = write_good_images(images, n)
    return write_config(root / "run.yaml", write_labels(root / "labels.csv", names), images), images, names


def prepare(config: Path, out: Path, workers: str = "0") -> list[str]:
    return ["prepare", str(config), "--out", str(out), "--size", str(SIZE), "--workers", workers, "--quiet"]


def one_paragraph(err: str, *fragments: str) -> None:
    assert err.startswith("cxrlt prepare: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "Bus error" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_no_space_for_the_pixel_file_stops_before_decoding_and_resumes(tmp_path: Path, monkeypatch, capsys):
    config, images, names = dataset(tmp_path, 6)
    out = tmp_path / "cache"

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert main(prepare(config, out)) == 2
    # Needed: the sparse pixel file's blocks, all but the page holding its header.
    needed = 6 * SIZE * SIZE + 128 - (out / "pixels.npy").stat().st_blocks * 512
    one_paragraph(capsys.readouterr().err, f"{out}: no space left on ", f"{needed / 1e3:.1f} kB needed",
                  "no image was decoded yet", "run the same command again to continue")
    assert not read_cache_info(out).complete
    monkeypatch.undo()
    assert main(prepare(config, out)) == 0
    assert "decoded 6 images" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out / "pixels.npy")[5], load_image(images / names[5], SIZE))


def test_without_preallocation_a_row_that_does_not_fit_stops_the_run_cleanly(tmp_path: Path, monkeypatch, capsys):
    config, images, names = dataset(tmp_path, 6)
    out = tmp_path / "cache"
    rows: list[int] = []
    real_pwrite = os.pwrite

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    def filling(fd, data, position):  # the disk is full from the 4th row of pixels on
        if len(data) == SIZE * SIZE:
            if len(rows) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            rows.append(position)
        return real_pwrite(fd, data, position)

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    monkeypatch.setattr(os, "pwrite", filling)
    monkeypatch.setattr(cache_module, "_CHECKPOINT_SECONDS", 0.0)
    assert main(prepare(config, out)) == 2
    one_paragraph(capsys.readouterr().err, "no space left on ", "free", "the 3 images decoded so far are kept")
    monkeypatch.undo()
    assert main(prepare(config, out)) == 0
    assert "decoded 3 images" in capsys.readouterr().out and read_cache_info(out).complete
    np.testing.assert_array_equal(np.load(out / "pixels.npy")[2], load_image(images / names[2], SIZE))


def killed(rows, paths, size):
    """What the kernel does to a worker on SIGBUS or when memory runs out."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_is_reported_and_the_cache_resumes(tmp_path: Path, monkeypatch, capsys):
    config, _, _ = dataset(tmp_path, 6)
    out = tmp_path / "cache"

    monkeypatch.setattr(cache_module, "_decode_rows", killed)
    assert main(prepare(config, out, workers="2")) == 2
    one_paragraph(capsys.readouterr().err, "a decoding worker process was killed", "Run the same command again")
    monkeypatch.undo()
    assert main(prepare(config, out, workers="2")) == 0


# ------------------------------------------------------------ a real, small disk
@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs mounted under tmp_path."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                                text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


# ~50 ms per image; CXRLT_TEST_NO_FALLOCATE=1 takes away posix_fallocate (a file system without it).
SLOW = """
import os, sys, time
if os.environ.get("CXRLT_TEST_NO_FALLOCATE"):
    del os.posix_fallocate
import cxrlt.data.cache as cache
from cxrlt.cli import main

real = cache.load_image

def slow(path, size):
    time.sleep(0.05)
    return real(path, size)

cache.load_image = slow
cache._CHECKPOINT_SECONDS = 0.1
sys.exit(main(sys.argv[1:]))
"""


def fill(disk: Path) -> None:
    """Write a file until the disk is full."""
    with open(disk / "filler", "wb", buffering=0) as handle:
        with pytest.raises(OSError) as info:
            while True:
                handle.write(b"\xff" * 4096)
    assert info.value.errno == errno.ENOSPC


@pytest.mark.parametrize("preallocate", [True, False], ids=["fallocate", "no-fallocate"])
def test_a_disk_filling_up_during_prepare_stops_it_cleanly(tmp_path: Path, small_disk: Path, capsys, preallocate):
    config, images, names = dataset(tmp_path, 40)
    out = small_disk / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    if not preallocate:
        env["CXRLT_TEST_NO_FALLOCATE"] = "1"
    process = subprocess.Popen([sys.executable, "-c", SLOW, *prepare(config, out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if (out / "done.npy").exists() and np.count_nonzero(np.load(out / "done.npy")) >= 4:
            break
        time.sleep(0.02)
    fill(small_disk)  # another program takes the rest of the disk
    _, err = process.communicate(timeout=60)
    # Before: the sparse pixel file's next page could not be allocated, SIGBUS ("Bus error", rc 135).
    if preallocate and process.returncode == 0:
        # The pixels had their blocks, and a page the small files freed let the last checkpoint through.
        assert read_cache_info(out).complete
        return
    assert process.returncode == 2, err
    one_paragraph(err, f"no space left on {small_disk}", "images decoded so far are kept", "run the same command again")
    kept = int(np.count_nonzero(np.load(out / "done.npy")))
    assert kept >= 4
    (small_disk / "filler").unlink()
    assert main(prepare(config, out)) == 0
    assert f"decoded {len(names) - kept} images" in capsys.readouterr().out
    pixels = np.load(out / "pixels.npy")
    for row in (0, kept, len(names) - 1):
        np.testing.assert_array_equal(pixels[row], load_image(images / names[row], SIZE))
