"""Deferred re-weighting in a real training loop: the engine tells the loss each epoch, DRW switches at its epoch."""

from __future__ import annotations

from cxrlt.config import parse_config
from cxrlt.losses.base import MultiLabelLoss
from tiny_runs import tiny


def test_the_engine_sets_the_epoch_and_drw_switches_on(tmp_path, monkeypatch, one_thread):
    from cxrlt.runs.train import train

    seen = []
    original = MultiLabelLoss.set_epoch

    def record(self, epoch):
        original(self, epoch)
        seen.append((epoch, self.drw_active))

    monkeypatch.setattr(MultiLabelLoss, "set_epoch", record)
    raw = tiny(tmp_path / "data", epochs=3, limit_train_batches=1, limit_eval_batches=1)
    raw["loss"] = {"name": "ldam", "drw_after": 2}
    train(parse_config(raw), tmp_path / "run", progress=False)
    assert seen == [(0, False), (1, False), (2, True)]
