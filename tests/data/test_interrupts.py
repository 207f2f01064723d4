"""A `cxrlt prepare` killed with SIGKILL resumes without decoding finished images again.

(Training: tests/training/test_training.py::test_sigkill_mid_run_then_resume_gives_identical_weights.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import cxrlt.data.cache as cache_module
from bad_inputs import write_config, write_good_images, write_labels
from cxrlt.cli import main
from cxrlt.data.images import load_image
from cxrlt.data.store import CacheStore

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 150

# The killed process: checkpoints every 0.1 s instead of 5 s, ~20 ms per image, and a
# log line per decoded image (written after the decode, before the row is recorded).
KILLED = """
import sys, time
import cxrlt.data.cache as cache
from cxrlt.cli import main

log = open(sys.argv[1], "a", buffering=1)
real = cache.load_image

def logged(path, size):
    time.sleep(0.02)
    image = real(path, size)
    log.write(f"{path}\\n")
    return image

cache.load_image = logged
cache._CHECKPOINT_SECONDS = 0.1
sys.exit(main(sys.argv[2:]))
"""


def test_sigkilled_prepare_resumes_without_decoding_finished_images(tmp_path: Path, monkeypatch, capsys):
    images = tmp_path / "images"
    names = write_good_images(images, N_IMAGES)
    config = write_config(tmp_path / "run.yaml", write_labels(tmp_path / "labels.csv", names), images)
    out = tmp_path / "cache"
    log = tmp_path / "decoded.log"
    argv = ["prepare", str(config), "--out", str(out), "--workers", "0", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", KILLED, str(log), *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if (out / "done.npy").exists() and log.exists() and len(log.read_text().splitlines()) >= N_IMAGES // 3:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "prepare finished before it could be killed"

    status = np.load(out / "done.npy")
    finished = {str(images / names[row]) for row in np.flatnonzero(status == cache_module.DECODED)}
    decoded_before = log.read_text().splitlines()
    assert finished and len(finished) < N_IMAGES
    assert finished <= set(decoded_before)  # a checkpoint claims only rows that were decoded

    decoded_again: list[str] = []

    def counting(path, size):
        decoded_again.append(str(path))
        return load_image(path, size)

    monkeypatch.setattr(cache_module, "load_image", counting)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"decoded {N_IMAGES - len(finished)} images" in printed
    assert f"{len(finished)} were done by an earlier run" in printed
    assert set(decoded_again) == {str(images / n) for n in names} - finished
    assert len(decoded_again) == N_IMAGES - len(finished)  # each pending image once, no finished one
    # At most the work since the last checkpoint (0.1 s plus one image) was lost.
    assert len(set(decoded_before) - finished) <= 10

    store = CacheStore(out, names, 16)
    for row in range(0, N_IMAGES, 7):
        np.testing.assert_array_equal(store[row], load_image(images / names[row], 16))


# The interrupted process: ~50 ms per image, in the parent and in its decoding workers (fork).
SLOW = """
import sys, time
import cxrlt.data.cache as cache
from cxrlt.cli import main

real = cache.load_image
calls = [0]

# Quick at first, then slow: the test's signal lands mid-work even on a loaded machine (about 14 s of margin).
def slow(path, size):
    calls[0] += 1
    time.sleep(0.05 if calls[0] <= 4 else 0.5)
    return real(path, size)

cache.load_image = slow
cache._CHECKPOINT_SECONDS = 0.1
sys.exit(main(sys.argv[1:]))
"""


def start_slow_prepare(tmp_path: Path, workers: str) -> tuple[subprocess.Popen, Path, list[str], list[str]]:
    """A `prepare --workers N` of 60 images in its own process group, as a terminal would start it."""
    images = tmp_path / "images"
    names = write_good_images(images, 60)
    config = write_config(tmp_path / "run.yaml", write_labels(tmp_path / "labels.csv", names), images)
    argv = ["prepare", str(config), "--out", str(tmp_path / "cache"), "--workers", workers, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    # Output to files, not pipes: a worker left behind would hold a pipe open and hang the test.
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", SLOW, *argv], env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr, start_new_session=True)
    return process, tmp_path / "cache", names, argv


def wait_for_progress(process: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if (out / "done.npy").exists() and np.count_nonzero(np.load(out / "done.npy")) >= 4:
            return
        time.sleep(0.02)
    raise AssertionError(f"prepare made no progress (exit code {process.poll()})")


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a zombie has exited; its parent has not reaped it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_ctrl_c_says_where_prepare_stopped_and_the_same_command_continues(tmp_path: Path, monkeypatch, capsys):
    process, out, names, argv = start_slow_prepare(tmp_path, "2")
    wait_for_progress(process, out)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    process.wait(timeout=60)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 130, stderr
    kept = int(np.count_nonzero(np.load(out / "done.npy")))
    assert 4 <= kept < len(names)
    assert stderr.strip() == (f"cxrlt prepare: interrupted: {out}: stopped after {kept} of {len(names)} images "
                              "(they are kept); run the same command again to continue")
    assert main(argv) == 0
    assert f"decoded {len(names) - kept} images" in capsys.readouterr().out
    store = CacheStore(out, names, 16)
    for row in range(0, len(names), 9):
        np.testing.assert_array_equal(store[row], load_image(tmp_path / "images" / names[row], 16))


def test_killing_prepare_leaves_no_worker_process_behind(tmp_path: Path):
    process, out, _, _ = start_slow_prepare(tmp_path, "2")
    wait_for_progress(process, out)
    workers = children(process.pid)
    assert len(workers) >= 2 and all(running(pid) for pid in workers)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    deadline = time.monotonic() + 3
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if running(pid)]
    for pid in left:  # do not leave them to the rest of the test session
        os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes {left} outlived their killed parent"
