"""Run folders: ownership, one writer, failed starts, resumes that change only what is safe, interrupts, full disks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cli_contract import assert_refused
from cxrlt.config import parse_config
from cxrlt.errors import ConfigError, DiskFull, InputError, Interrupted
from cxrlt.ownership import FolderLock
from cxrlt.runs.folder import RunFolder
from cxrlt.runs.train import resume, train
from tiny_runs import tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("films")


# ----------------------------------------------------------------- ownership
def test_train_refuses_a_folder_of_user_files_and_touches_nothing(tmp_path, data_dir):
    out = tmp_path / "results"
    out.mkdir()
    for name, text in (("report.md", "my notes"), ("predictions.csv", "id,x\n1,2\n"), ("metrics.json", "{}")):
        (out / name).write_text(text)
    (out / "plots").mkdir()
    (out / "plots" / "roc.png").write_bytes(b"not ours")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(data_dir)))
    assert_refused(["train", config, "--out", out, "--no-progress"],
                   [str(out), "holds files cxrlt did not write (metrics.json, plots, predictions.csv, report.md)",
                    "nothing was changed"], keep=[tmp_path])


def test_resume_of_a_folder_that_is_no_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert_refused(["train", "--resume", tmp_path], [str(tmp_path), "is not a run folder (no config.yaml)"],
                   keep=[tmp_path])


@pytest.mark.parametrize("name", ["../../escaped", "/abs/path", "a/b", "..", ".hidden", ""])
def test_run_names_are_plain_folder_names(data_dir, name):
    with pytest.raises(ConfigError, match="not a plain folder name"):
        parse_config({**tiny(data_dir), "name": name})


def test_a_failed_start_claims_nothing_and_the_fixed_command_runs(tmp_path, data_dir):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="resnet10tt"):
        train(parse_config({**tiny(data_dir), "model": {"backbone": "resnet10tt"}}), run, progress=False)
    assert not run.exists()  # neither a config nor a marker: the folder was never claimed
    result = train(parse_config(tiny(data_dir, epochs=1)), run, progress=False)
    assert result.metrics is not None and (run / "config.yaml").is_file()


def test_a_second_writer_stops_at_once_and_the_first_is_unaffected(tmp_path, data_dir):
    run = tmp_path / "run"
    train(parse_config(tiny(data_dir, epochs=1)), run, progress=False)
    with FolderLock(run, "another cxrlt"):  # what a running `cxrlt train` / `--resume` holds
        started = time.monotonic()
        with pytest.raises(InputError, match="is in use by another cxrlt process .*pid %d" % os.getpid()):
            resume(run, progress=False)
        with pytest.raises(ConfigError, match="already holds a run"):
            train(parse_config(tiny(data_dir, epochs=1)), run, progress=False)
        assert time.monotonic() - started < 5
    resume(run, progress=False)  # released: the folder is usable again


def test_resume_accepts_safe_overrides_and_names_unsafe_ones(tmp_path, data_dir):
    run = tmp_path / "run"
    train(parse_config(tiny(data_dir, epochs=1)), run, progress=False)
    with pytest.raises(ConfigError, match=r"--resume cannot change loss.alpha, loss.gamma, loss.name, train.epochs: .*different experiment"):
        resume(run, progress=False, overrides=["train.epochs=5", "loss.name=focal", "data.images.skip_bad=true"])
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["images"]["skip_bad"] is False
    resume(run, progress=False, overrides=["data.images.skip_bad=true", "train.num_workers=1"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["images"]["skip_bad"] is True and saved["train"]["num_workers"] == 1


def test_older_run_folders_without_a_marker_are_adopted(tmp_path, data_dir):
    run = tmp_path / "run"
    train(parse_config(tiny(data_dir, epochs=1)), run, progress=False)
    (run / "cxrlt.json").unlink()
    (run / "cxrlt.lock").unlink()
    resume(run, progress=False)
    assert json.loads((run / "cxrlt.json").read_text())["kind"] == "run"


# -------------------------------------------------------- checkpoints, resume
def test_last_checkpoint_every_epoch_and_resume_never_repeats_an_epoch(tmp_path, data_dir, monkeypatch):
    """A run whose best epoch is its first: last.ckpt still follows every epoch, and a resume starts after it."""
    import cxrlt.training.module as module

    falling = iter([0.9, 0.5, 0.4, 0.3])  # validation mAP / AUC per epoch: best at epoch 0
    monkeypatch.setattr(module, "monitor_metrics", lambda *a: (lambda v: {"map": v, "auc": v,
                                                                         "ap_per_class": [v] * 14})(next(falling)))
    trained: list[int] = []
    interrupt = {"at": 2}
    start = module.ClassifierModule.on_train_epoch_start

    def ctrl_c_at_epoch_2(self):
        if self.current_epoch == interrupt.get("at"):
            del interrupt["at"]
            raise KeyboardInterrupt  # Ctrl-C at the start of the third epoch, once
        trained.append(self.current_epoch)
        start(self)

    monkeypatch.setattr(module.ClassifierModule, "on_train_epoch_start", ctrl_c_at_epoch_2)
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match=r"its last finished epoch \(2 of 4\) is saved in .*last.ckpt. Continue "
                                          r"with `cxrlt train --resume"):
        train(parse_config(tiny(data_dir, epochs=4)), run, progress=False)
    checkpoints = run / "stages/01-main/checkpoints"
    assert trained == [0, 1]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1  # not the best epoch's
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["epoch"] == 0
    resume(run, progress=False)
    assert trained == [0, 1, 2, 3]  # no finished epoch trained twice
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 3
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    assert best["epoch"] == 0 and "optimizer_states" not in best  # weights only: what the next stage and export need


def test_learning_rate_is_logged_every_step_and_the_schedule_fits_accumulation(tmp_path, data_dir):
    from cxrlt.evaluation.report import read_learning_rates
    from cxrlt.training.data import load_run_data

    config = parse_config(tiny(data_dir, epochs=2, accumulate=2, schedule={"name": "step", "step_size": 1,
                                                                          "gamma": 0.1}))
    batches = len(load_run_data(config).part("train")) // 32  # whole batches (the last partial one is dropped)
    steps = -(-batches // 2)  # ceil: a partial accumulation group still steps at the end of the epoch
    run = tmp_path / "run"
    train(config, run, progress=False)
    facts = json.loads((run / "stages/01-main/stage.json").read_text())
    assert (facts["batches_per_epoch_per_rank"], facts["optimizer_steps_per_epoch"], facts["total_optimizer_steps"],
            facts["effective_batch"], facts["world_size"]) == (batches, steps, 2 * steps, 64, 1)
    rates = read_learning_rates(run)
    assert rates["step"].tolist() == list(range(2 * steps))
    assert rates["lr"].tolist() == pytest.approx([0.003] * steps + [0.0003] * steps)
    assert (run / "plots/training_curves.png").is_file() is False  # reports are off in these runs


def test_cosine_schedule_ends_at_its_minimum_in_one_process(tmp_path, data_dir):
    run = tmp_path / "run"
    train(parse_config(tiny(data_dir, epochs=2, schedule={"name": "cosine", "min_lr_ratio": 0.1})), run,
          progress=False)
    last = torch.load(run / "stages/01-main/checkpoints/last.ckpt", weights_only=True)
    assert last["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(0.0003)


def test_a_full_disk_stops_training_with_the_last_checkpoint_kept(tmp_path, data_dir, monkeypatch):
    import cxrlt.io as io

    run = tmp_path / "run"
    real = io.shutil.disk_usage
    full = {"on": False}

    def usage(path):
        total, used, free = real(path)
        return type(real(path))(total, used, 500 if full["on"] else free)

    import cxrlt.training.module as module

    start = module.ClassifierModule.on_train_epoch_start

    def disk_fills_in_epoch_1(self):
        full["on"] = self.current_epoch >= 1
        start(self)

    monkeypatch.setattr(io.shutil, "disk_usage", usage)
    monkeypatch.setattr(module.ClassifierModule, "on_train_epoch_start", disk_fills_in_epoch_1)
    with pytest.raises(DiskFull, match=r"no space left on /.*: 500 bytes free, \d+\.\d MB needed; (best|last).ckpt "
                                       r"was not written .*\. Stage main stopped; .*Continue with `cxrlt train --resume"):
        train(parse_config(tiny(data_dir, epochs=3)), run, progress=False)
    last = run / "stages/01-main/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    resume(run, progress=False)
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_ctrl_c_during_train_exits_130_with_the_resume_command(tmp_path, data_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(data_dir, epochs=30)))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CXRLT_NO_PROGRESS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "cxrlt", "train", str(config), "--out", str(run)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run / "stages/01-main/checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert f"cxrlt train: interrupted: Stage main stopped; its last finished epoch" in err
    assert f"Continue with `cxrlt train --resume {run}`" in err and "Traceback" not in err
    assert RunFolder(run).started and not (run / "stages/01-main/done.json").exists()
