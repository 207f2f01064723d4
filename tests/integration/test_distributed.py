"""Multi-process training as users launch it: Lightning DDP on CPU (gloo), by Lightning itself and by torchrun.

Each test starts real processes. The data are 360 synthetic films with an
explicit split (256 train / 61 val / 43 test): 128 training rows per rank
make whole batches of 32, so "each image exactly once per epoch" is exact,
and the odd validation split makes the ranks' shards unequal (the gather
must drop its padding).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from cxrlt.labels import NIH14

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "tests" / "ddp_entry.py"
N_TRAIN, N_VAL, N_TEST = 256, 61, 43
BATCH = 32

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from cxrlt.data.synthetic import generate_dataset

    folder = tmp_path_factory.mktemp("ddp-data")
    generate_dataset(folder / "films", n_images=N_TRAIN + N_VAL + N_TEST, image_size=32, seed=5,
                     min_frequency=0.05, progress=False)
    table = pd.read_csv(folder / "films" / "labels.csv")
    table["patient_id"] = table["image_id"]  # one image per patient: the given split is patient-wise
    table["split"] = ["train"] * N_TRAIN + ["val"] * N_VAL + ["test"] * N_TEST
    table.to_csv(folder / "labels.csv", index=False)
    return folder


def run_config(dataset: Path, path: Path, devices: int = 2, **train) -> Path:
    raw = {
        "name": "ddp",
        "data": {"sources": [{"name": "csv", "labels": str(dataset / "labels.csv"), "images": str(dataset / "films"),
                              "classes": list(NIH14)}],
                 "split": {"method": "source"}, "images": {"size": 32}},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 2, "batch_size": BATCH, "num_workers": 0, "monitor": "auc", "accelerator": "cpu",
                  "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                  "optimizer": {"name": "adamw", "lr": 0.003}, **train},
        "evaluation": {"bootstrap": 0, "report": False},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def environment(record: Path) -> dict[str, str]:
    record.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "CXRLT_NO_PROGRESS": "1", "CXRLT_TEST_RECORD": str(record),
            "OMP_NUM_THREADS": "1"}


def draws(record: Path, stage: str = "01-main") -> dict[int, dict[int, list[int]]]:
    """epoch -> rank -> training rows drawn in `stage`, in order."""
    out: dict[int, dict[int, list[int]]] = {}
    for path in sorted(record.glob("rank*.jsonl")):
        rank = int(path.stem[4:])
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if item["stage"] == stage:
                out.setdefault(item["epoch"], {}).setdefault(rank, []).extend(item["rows"])
    return out


def logged_lr(stage: Path) -> dict[int, float]:
    """step -> learning rate logged at that step (all attempts of the stage, the later attempt winning)."""
    logs = stage / "logs"
    files = [*sorted(logs.glob("metrics-before-resume-*.csv")), logs / "metrics.csv"]
    frame = pd.concat([pd.read_csv(f) for f in files if f.is_file()], ignore_index=True)
    column = next(c for c in frame.columns if c.startswith("lr-"))
    rows = frame.dropna(subset=[column])
    return {int(step): float(lr) for step, lr in zip(rows["step"], rows[column])}


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State"))
            except (OSError, StopIteration):
                continue
            if text in command and "zombie" not in state:
                found.append(int(entry.name))
    return found


def finished_epoch(checkpoint: Path) -> int:
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])


def test_lightning_launch_draws_each_image_once_gathers_exactly_and_schedules_by_rank(tmp_path, dataset):
    config = run_config(dataset, tmp_path / "ddp.yaml", schedule={"name": "cosine", "warmup_epochs": 0.5})
    run, record = tmp_path / "run", tmp_path / "rows"
    done = subprocess.run([sys.executable, str(ENTRY), "train", str(config), "--out", str(run), "--no-progress"],
                          env=environment(record), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) x batch 32 x accumulate 1 = effective batch 64; 4 optimiser steps per epoch, 8 in all" \
        in done.stderr
    assert done.stdout.count("mean (") == 1  # one table: rank 1 printed nothing

    # every training image exactly once per epoch, split between the ranks, in a new order each epoch
    drawn = draws(record)
    assert sorted(drawn) == [0, 1]
    for epoch in (0, 1):
        ranks = drawn[epoch]
        assert sorted(ranks) == [0, 1] and len(ranks[0]) == len(ranks[1]) == N_TRAIN // 2
        assert sorted(ranks[0] + ranks[1]) == list(range(N_TRAIN))
    assert drawn[0][0] != drawn[1][0]

    # facts saved with the run
    facts = json.loads((run / "stages/01-main/stage.json").read_text())
    assert facts | {"world_size": 2, "effective_batch": 64, "optimizer_steps_per_epoch": 4,
                    "total_optimizer_steps": 8} == facts
    # the schedule runs over the 8 steps this world size makes: warm-up of 2 steps, cosine to 0 after step 8
    lr = logged_lr(run / "stages/01-main")
    assert sorted(lr) == list(range(8))
    assert lr[0] == pytest.approx(0.0015) and lr[1] == pytest.approx(0.003)
    assert [lr[s] for s in range(1, 8)] == sorted((lr[s] for s in range(1, 8)), reverse=True)
    last = __import__("torch").load(run / "stages/01-main/checkpoints/last.ckpt", map_location="cpu",
                                    weights_only=True)
    assert last["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)  # ended at its minimum

    # the folder: written once, complete, by rank 0
    assert not [p for p in run.rglob(".*") if p.is_file()]
    marker = json.loads((run / "cxrlt.json").read_text())
    assert marker["kind"] == "run"
    labels = pd.read_csv(dataset / "labels.csv")
    for split, n, name in (("val", N_VAL, "predictions_val.csv"), ("test", N_TEST, "predictions.csv")):
        predictions = pd.read_csv(run / name)
        expected = labels.loc[labels["split"] == split, "image_id"].tolist()
        assert predictions["image_id"].tolist() == expected  # row order, no duplicate, no padding row
        assert len(predictions) == n
    # metrics equal those computed from the saved table
    test = labels[labels["split"] == "test"].reset_index(drop=True)
    predictions = pd.read_csv(run / "predictions.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    for name in NIH14:
        y = test[name].to_numpy()
        if 0 < y.sum() < len(y):
            assert metrics["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y, predictions[name]), abs=1e-9)
    # the validation score gathered across ranks during training is the best model's score on all 61 images
    val = labels[labels["split"] == "val"].reset_index(drop=True)
    val_predictions = pd.read_csv(run / "predictions_val.csv")
    aucs = [roc_auc_score(val[name], val_predictions[name]) for name in NIH14 if 0 < val[name].sum() < N_VAL]
    best = json.loads((run / "stages/01-main/done.json").read_text())["best_score"]
    assert best == pytest.approx(float(np.mean(aucs)), abs=1e-4)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ENTRY), *args]


def test_torchrun_cycle_sampler_step_schedule_two_stages_and_resume_after_kill(tmp_path, dataset):
    from cxrlt.registry import SAMPLERS

    config = run_config(dataset, tmp_path / "ddp.yaml", epochs=3, sampler="cycle",
                        schedule={"name": "step", "step_size": 1, "gamma": 0.1})
    raw = yaml.safe_load(config.read_text())
    raw["stages"] = [{"name": "main"}, {"name": "crt", "freeze_backbone": True, "epochs": 1}]
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    first = subprocess.Popen(_torchrun("train", str(config), "--out", str(run), "--no-progress"),
                             env=environment(tmp_path / "rows-1"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    last = run / "stages/01-main/checkpoints/last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # the launcher only: its ranks must not outlive it
    first.wait()
    assert last.exists(), first.stderr.read().decode()[-3000:]
    deadline = time.monotonic() + 10
    while processes_mentioning(str(run)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_mentioning(str(run))
    killed_after = finished_epoch(last)
    assert killed_after < 2 and not (run / "stages/01-main/done.json").exists()

    resumed = subprocess.run(_torchrun("train", "--resume", str(run), "--no-progress"),
                             env=environment(tmp_path / "rows-2"), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "stages/01-main/done.json").exists() and (run / "stages/02-crt/done.json").exists()
    assert (run / "model.safetensors").exists() and (run / "metrics.json").exists()

    # the resumed attempt starts after the last finished epoch; its epochs are the single-process
    # cycle stream for (seed, epoch), split between the ranks
    drawn = draws(tmp_path / "rows-2")
    main_epochs = sorted(drawn)
    assert main_epochs == list(range(killed_after + 1, 3))
    assert sorted(draws(tmp_path / "rows-2", "02-crt")) == [0]
    labels = pd.read_csv(dataset / "labels.csv")[list(NIH14)].to_numpy(dtype=np.float32)[:N_TRAIN]
    sampler = SAMPLERS.build("cycle", context={"labels": labels, "num_samples": N_TRAIN, "seed": 0, "rank": 0,
                                               "world_size": 1})
    for epoch in main_epochs:
        sampler.set_epoch(epoch)
        ranks = drawn[epoch]
        assert sorted(ranks[0] + ranks[1]) == sorted(int(i) for i in sampler)

    # the step schedule decays at every epoch whatever the number of processes: 4 steps per epoch
    lr = logged_lr(run / "stages/01-main")
    assert sorted(lr) == list(range(12))
    for step, value in lr.items():
        assert value == pytest.approx(0.003 * 0.1 ** (step // 4)), step


def test_kfold_with_two_processes(tmp_path, dataset):
    config = run_config(dataset, tmp_path / "ddp.yaml", epochs=1)
    raw = yaml.safe_load(config.read_text())
    raw["data"]["split"] = {"method": "kfold", "folds": 2}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "kfold"
    done = subprocess.run([sys.executable, str(ENTRY), "kfold", str(config), "--folds", "2", "--out", str(out),
                           "--no-progress"], env=environment(tmp_path / "rows"), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("out-of-fold") == 1
    oof = pd.read_csv(out / "predictions_oof.csv")
    assert len(oof) == N_TRAIN + N_VAL and oof["image_id"].is_unique
    assert len(pd.read_csv(out / "predictions.csv")) == N_TEST
    for k in (0, 1):
        assert (out / f"folds/{k}/fold.json").is_file()
        assert json.loads((out / f"folds/{k}/stages/01-main/stage.json").read_text())["world_size"] == 2
