"""The training engine end to end on small synthetic data (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from cxrlt.config import parse_config
from cxrlt.errors import ConfigError
from cxrlt.inference.saved_model import load_model
from cxrlt.runs.train import resume, train
from tiny_runs import tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.mark.slow
def test_tiny_run_learns_and_writes_a_complete_run_folder(tmp_path, data_dir):
    config = parse_config(tiny_config(data_dir, epochs=6))
    result = train(config, tmp_path / "run", progress=False)
    run = result.run_dir
    for name in ("config.yaml", "environment.json", "model.safetensors", "model.json", "metrics.json",
                 "metrics_val.json", "predictions.csv", "predictions_val.csv", "report.md",
                 "plots/roc.png", "plots/pr.png", "plots/training_curves.png",
                 "stages/01-main/checkpoints/last.ckpt", "stages/01-main/checkpoints/best.ckpt",
                 "stages/01-main/done.json", "stages/01-main/logs/metrics.csv"):
        assert (run / name).is_file(), name
    assert not list(run.rglob(".*.tmp")) and not [p for p in run.rglob(".*") if p.is_file()]
    cams = sorted((run / "plots/cams").rglob("*.png"))
    assert len(cams) == 4  # the four rarest classes present in the test split, one overlay each
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 + 3 and "http" not in html.replace("http-equiv", "")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test"
    assert metrics["mean"]["auc"] > 0.65, metrics["mean"]  # chance is 0.5; measured 0.745
    val_logged = json.loads((run / "stages/01-main/done.json").read_text())["best_score"]
    assert 0.6 < val_logged <= 1.0
    # the saved model alone reproduces the saved predictions
    model, card = load_model(run)
    assert card.classes[0] == "Atelectasis" and len(card.thresholds) == 14
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["optimizer"] == {"name": "adamw", "lr": 0.003, "weight_decay": 0.01,
                                           "betas": [0.9, 0.999], "eps": 1e-08}


TWO_STAGES = [{"name": "main", "epochs": 2}, {"name": "crt", "freeze_backbone": True, "epochs": 2}]


@pytest.mark.slow
@pytest.mark.parametrize("stages, killed_after", [
    ([], "stages/01-main/checkpoints/last.ckpt"),                 # mid-run: after epoch 1 of 3
    (TWO_STAGES, "stages/02-crt/checkpoints/last.ckpt"),          # mid-way through the second stage
], ids=["one-stage", "second-stage"])
def test_sigkill_mid_run_then_resume_gives_identical_weights(tmp_path, data_dir, stages, killed_after):
    # Both runs are fresh processes with the same environment: float results depend on the
    # intra-op thread count, which other tests in this process may have changed.
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump({**tiny_config(data_dir), "stages": stages}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CXRLT_NO_PROGRESS": "1"}

    def start(run: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cxrlt", "train", str(config_path), "--out", str(run)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    reference = tmp_path / "reference"
    finished = start(reference)
    assert finished.wait() == 0, finished.stderr.read().decode()[-2000:]

    run = tmp_path / "killed"
    process = start(run)
    last = run / killed_after
    # Generous: on a loaded machine a kill at the deadline, before `last`, would test a fresh start instead.
    deadline = time.monotonic() + 1200
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert last.exists(), f"the run never wrote {killed_after} (exit code {process.returncode})"
    assert not (last.parent.parent / "done.json").exists(), "the stage finished before it could be killed"
    assert not (run / "model.safetensors").exists()

    resumed = subprocess.run([sys.executable, "-m", "cxrlt", "train", "--resume", str(run)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    ours, theirs = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert np.array_equal(ours[key].numpy(), theirs[key].numpy()), key
    assert json.loads((run / "metrics.json").read_text())["mean"] == json.loads(
        (reference / "metrics.json").read_text())["mean"]
    # the epochs logged before the kill survive the resume: same curves as the uninterrupted run
    from cxrlt.evaluation.report import read_training_logs

    ours_logs, their_logs = read_training_logs(run), read_training_logs(reference)
    assert list(run.glob("stages/*/logs/metrics-before-resume-1.csv"))
    assert ours_logs[["stage", "epoch", "val/auc"]].equals(their_logs[["stage", "epoch", "val/auc"]])


@pytest.mark.slow
def test_last_checkpoint_carries_the_best_score_of_its_own_epoch(tmp_path, data_dir, monkeypatch):
    """A resumed run keeps the best epoch so far: `last.ckpt` holds the best score after that epoch's validation.

    Saved before `best` had updated, it held the score of the epoch before (none after the first), and
    the first epoch after a resume replaced `best.ckpt` whatever its score.
    """
    import torch

    import cxrlt.runs.train as run_module
    from cxrlt.evaluation.report import read_training_logs

    class StopInSecondEpoch(run_module.StageFacts):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "StageFacts", StopInSecondEpoch)
    run = tmp_path / "run"
    with pytest.raises(run_module.Interrupted):
        train(parse_config(tiny_config(data_dir, epochs=3, limit_train_batches=2)), run, progress=False)
    checkpoint = torch.load(run / "stages/01-main/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    best = next(state for key, state in checkpoint["callbacks"].items() if "'monitor': 'val/auc'" in key)
    first_epoch = read_training_logs(run).dropna(subset=["val/auc"])["val/auc"].iloc[0]
    assert checkpoint["epoch"] == 0
    assert best["best_model_score"] is not None and float(best["best_model_score"]) == pytest.approx(first_epoch)


def test_existing_run_folder_is_not_overwritten(tmp_path, data_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: other\n")
    with pytest.raises(ConfigError, match="already holds a run; continue it with `cxrlt train --resume"):
        train(parse_config(tiny_config(data_dir)), run, progress=False)


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="is not a run folder"):
        resume(tmp_path, progress=False)
