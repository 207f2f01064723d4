"""Same seed and config, fresh processes: identical metrics, predictions and
weights; the seed and library versions are saved with the run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny_runs import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs of one config, each in a fresh process."""
    root = tmp_path_factory.mktemp("determinism")
    raw = tiny_config(root / "synthetic", epochs=2, limit_train_batches=4, seed=7)
    raw["data"]["sources"][0]["n_images"] = 300
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    # The same environment for every run: CPU float results depend on the intra-op thread count.
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CXRLT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    folders = {}
    for name in ("first", "second"):
        folders[name] = root / name
        result = subprocess.run([sys.executable, "-m", "cxrlt", "train", str(config), "--out", str(folders[name])],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    return folders


@pytest.mark.slow
def test_same_seed_and_config_give_identical_results(runs):
    first, second = runs["first"], runs["second"]
    for name in ("metrics.json", "metrics_val.json", "predictions.csv", "predictions_val.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    ours, theirs = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    logged = [(run / "stages/01-main/logs/metrics.csv").read_text() for run in (first, second)]
    assert logged[0] == logged[1]
    # Trained, not constant: the runs learned something and their predictions vary by image.
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["mean"]["auc"] is not None
    probs = np.loadtxt(first / "predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 15))
    assert probs.std(axis=0).min() > 0


@pytest.mark.slow
def test_environment_json_records_seed_versions_and_threads(runs):
    env = json.loads((runs["first"] / "environment.json").read_text())
    assert env["seed"] == 7
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
    for name in ("lightning", "timm", "pillow", "pydicom", "scipy", "scikit-learn", "pandas"):
        assert env[name] == version(name), name
    assert env["threads"] == 1  # OMP_NUM_THREADS=1 in the runs' environment
    assert env["command"][1:3] == ["train", str(runs["first"].parent / "tiny.yaml")]
    saved = yaml.safe_load((runs["first"] / "config.yaml").read_text())
    assert saved["train"]["seed"] == 7 and saved["data"]["split"]["seed"] == 0
