"""A `cxrlt prepare` killed with SIGKILL resumes without decoding finished images again.

(Training: tests/test_training.py::test_sigkill_mid_run_then_resume_gives_identical_weights.)
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

REPO = Path(__file__).resolve().parents[1]
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
