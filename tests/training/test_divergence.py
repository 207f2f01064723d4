"""A diverging run stops with exit code 3 naming the step, keeps the last good
checkpoint, and never saves a checkpoint (last or best) of a diverged state."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from cxrlt.cli import main
from cxrlt.models.build import CxrModel
from cxrlt.training.checkpoints import load_checkpoint
from tiny_runs import tiny_config

BATCHES = 3  # optimizer steps per epoch (limit_train_batches)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def config_file(tmp_path: Path, data_dir: Path) -> Path:
    raw = tiny_config(data_dir, epochs=3, limit_train_batches=BATCHES, limit_eval_batches=2)
    raw["data"]["sources"][0]["n_images"] = 300
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Sabotage:
    """Replaces `CxrModel.training_loss`: normal until call `at`, then `spoil(loss, outputs)`.

    Records the checkpoint files as they are when the bad step starts.
    """

    def __init__(self, at: int, spoil, checkpoints: Path):
        self.at = at
        self.spoil = spoil
        self.calls = 0
        self.checkpoints = checkpoints
        self.before: dict[str, str] = {}
        self.original = CxrModel.training_loss

    def method(self):
        """A plain function (bound like a method when set on the class)."""
        return lambda model, criterion, outputs, targets: self(model, criterion, outputs, targets)

    def __call__(self, model, criterion, outputs, targets):
        loss = self.original(model, criterion, outputs, targets)
        self.calls += 1
        if self.calls == self.at:
            self.before = {p.name: digest(p) for p in self.checkpoints.glob("*.ckpt")}
            return self.spoil(loss, outputs)
        return loss


def nan_loss(loss, outputs):
    return loss * float("nan")


def nan_gradient(loss, outputs):
    # Forward: loss + 0. Backward: d sqrt(u)/du at u = 0 is inf, times du/d(outputs) = 0 -> NaN.
    # The loss stays finite; the weights become NaN after this optimizer step.
    return loss + torch.sqrt((outputs.sum() * 0.0) ** 2)


def test_nan_loss_stops_with_exit_3_naming_the_step_and_keeps_the_good_checkpoints(tmp_path, data_dir, monkeypatch, capsys):
    config = config_file(tmp_path, data_dir)
    run = tmp_path / "run"
    checkpoints = run / "stages/01-main/checkpoints"
    sabotage = Sabotage(at=BATCHES + 2, spoil=nan_loss, checkpoints=checkpoints)  # epoch 1, batch 1
    monkeypatch.setattr(CxrModel, "training_loss", sabotage.method())
    code = main(["train", str(config), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("cxrlt train: error: the training loss became nan at step 4 (epoch 1, batch 1)")
    assert "last good checkpoint is kept" in err
    assert set(sabotage.before) == {"last.ckpt", "best.ckpt"}
    assert {p.name: digest(p) for p in checkpoints.glob("*.ckpt")} == sabotage.before  # neither rewritten
    last = load_checkpoint(checkpoints / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (0, BATCHES)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    for name in ("model.safetensors", "metrics.json", "stages/01-main/done.json"):
        assert not (run / name).exists(), name
    assert not [p for p in run.rglob(".*") if p.is_file()]  # no temporary files left behind


def test_weights_gone_nan_at_an_epoch_end_are_never_checkpointed(tmp_path, data_dir, monkeypatch, capsys):
    config = config_file(tmp_path, data_dir)
    run = tmp_path / "run"
    checkpoints = run / "stages/01-main/checkpoints"
    # The last step of epoch 1: the loss is finite but the update makes every weight NaN,
    # and validation and the end-of-epoch checkpoints come next.
    sabotage = Sabotage(at=2 * BATCHES, spoil=nan_gradient, checkpoints=checkpoints)
    monkeypatch.setattr(CxrModel, "training_loss", sabotage.method())
    code = main(["train", str(config), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("cxrlt train: error: the validation predictions after epoch 1 (step 6) are not finite")
    assert {p.name: digest(p) for p in checkpoints.glob("*.ckpt")} == sabotage.before
    last = load_checkpoint(checkpoints / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (0, BATCHES)
    best = load_checkpoint(checkpoints / "best.ckpt")
    assert all(torch.isfinite(v).all() for v in best["state_dict"].values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    assert not (run / "model.safetensors").exists()
