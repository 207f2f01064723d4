"""Training strategies: decoupled stage 2, tau-normalisation, progressive resizing, Ranger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxrlt.config import ModelConfig, parse_config
from cxrlt.evaluation.metrics import average_precision, f1_scores, roc_auc, tune_thresholds
from cxrlt.models.backbones import GRAY_MEAN, GRAY_STD
from cxrlt.models.build import CxrModel, build_model
from cxrlt.models.heads import LinearHead
from cxrlt.models.pooling import AvgPool
from cxrlt.registry import OPTIMIZERS
from cxrlt.training.checkpoints import load_checkpoint, model_state
from cxrlt.runs.train import train
from cxrlt.training.stages import resolve_stages
from cxrlt.training.tau import mean_f1_at_half, tune_tau
from tiny_runs import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def test_tau_normalisation_of_a_hand_made_weight_matrix():
    model = build_model(ModelConfig(backbone="resnet10t"), num_classes=2)
    head = model.head
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[0, :2] = torch.tensor([3.0, 4.0])   # norm 5
        head.fc.weight[1, :1] = torch.tensor([0.5])        # norm 0.5
        head.fc.bias.copy_(torch.tensor([0.1, -0.2]))
    pooled = torch.zeros(1, head.fc.in_features)
    pooled[0, :2] = torch.tensor([1.0, 2.0])
    for tau in (0.0, 0.5, 1.0, 2.0):
        expected = torch.tensor([(3 + 8) / 5 ** tau + 0.1, 0.5 / 0.5 ** tau - 0.2])
        assert torch.allclose(head.logits_from_pooled(pooled, tau)[0], expected, atol=1e-6)
    # tau = 1 gives unit-norm class vectors
    assert torch.allclose(head.classifier_weight(1.0).norm(dim=1), torch.ones(2))
    head.tau.fill_(1.0)
    head.reset_classifier()
    assert head.tau.item() == 0.0


def test_tau_leaves_every_class_ranking_and_so_auc_and_ap_unchanged():
    """w_k . x / ||w_k||^tau + b_k: for one class tau scales w_k . x by a positive number, the bias stays."""
    rng = np.random.default_rng(0)
    head = LinearHead(16, 5, AvgPool()).double()  # float64: rounding creates no ties between close scores
    with torch.no_grad():
        head.fc.weight.copy_(torch.from_numpy(rng.normal(0, 1, (5, 16)) * [[0.1], [0.3], [0.6], [1.0], [1.5]]))
        head.fc.bias.copy_(torch.from_numpy(rng.normal(-1, 0.5, 5)))
        pooled = torch.from_numpy(rng.normal(0, 1, (400, 16)))
        logits = {tau: head.logits_from_pooled(pooled, tau).numpy() for tau in (0.0, 0.5, 1.0, 1.5, 2.0)}
    probs = {tau: 1 / (1 + np.exp(-z)) for tau, z in logits.items()}
    assert max(p.max() for p in probs.values()) < 1 - 1e-9  # unsaturated: sigmoid itself makes no ties
    labels = (rng.random((400, 5)) < 0.3).astype(np.float32)
    auc, ap = roc_auc(labels, probs[0.0]), average_precision(labels, probs[0.0])
    best_f1 = f1_scores(labels, probs[0.0], tune_thresholds(labels, probs[0.0]))
    for tau, p in probs.items():
        assert np.array_equal(np.argsort(p, axis=0, kind="stable"), np.argsort(probs[0.0], axis=0, kind="stable"))
        np.testing.assert_allclose(roc_auc(labels, p), auc, rtol=0, atol=1e-12)
        np.testing.assert_allclose(average_precision(labels, p), ap, rtol=0, atol=1e-12)
        # thresholds tuned on validation afterwards undo it: the same best F1 per class
        np.testing.assert_allclose(f1_scores(labels, p, tune_thresholds(labels, p)), best_f1, rtol=0, atol=1e-12)
    # what tau does move: F1 at the fixed 0.5 threshold
    assert len({round(mean_f1_at_half(labels, p), 9) for p in probs.values()}) == len(probs)


class ScoreBackbone(torch.nn.Module):
    """A (B, 1, 1, 1) feature map: the image's first pixel value / 10 (undoing the model's normalisation)."""

    num_features = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1, :1, :1] * GRAY_STD + GRAY_MEAN) * 25.5


def test_tune_tau_picks_the_tau_maximising_f1_at_half():
    """One class with w = 4, b = -2: positive iff s >= 2 * 4^(tau - 1).

    Scores s: negatives 1.0 and 1.9, positives 2.1 and 3.0. F1 at the cut c:
    2/3 for c <= 1, 0.8 for 1 < c <= 1.9, 1 for 1.9 < c <= 2.1, 2/3 up to 3.
    Of 0, 0.1, ..., 2 only tau = 1 (c = 2) puts c in (1.9, 2.1] (tau 0.9 and
    1.1 give 1.74 and 2.30). A second class without positives predicts every
    image positive (F1 0) and is left out of the mean.
    """
    head = LinearHead(1, 2, AvgPool())
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[4.0], [1.0]]))
        head.fc.bias.copy_(torch.tensor([-2.0, 5.0]))
    model = CxrModel(ScoreBackbone(), head, in_chans=1)
    store = [np.full((4, 4), v, np.uint8) for v in (10, 19, 21, 30)]
    labels = np.array([[0, 0], [0, 0], [1, 0], [1, 0]], np.float32)
    tuning = tune_tau(model, store, labels, 4, progress=False)
    assert tuning["tau"] == 1.0 and head.tau.item() == 1.0
    assert tuning["scores"][0.0] == pytest.approx(2 / 3) and tuning["scores"][1.0] == 1.0
    assert tuning["scores"][0.9] == pytest.approx(0.8) and tuning["scores"][1.1] == pytest.approx(2 / 3)
    assert sorted(tuning["scores"]) == [round(0.1 * i, 1) for i in range(21)]


def test_decoupled_stage_defaults_to_class_balanced_sampling_and_reinit(tmp_path, data_dir):
    config = parse_config({**tiny_config(data_dir), "stages": [
        {"name": "end2end"}, {"name": "crt", "freeze_backbone": True, "epochs": 1}]})
    first, second = resolve_stages(config, tmp_path)
    assert (first.sampler.name, first.reinit_head, first.freeze_backbone) == ("instance", False, False)
    assert (second.sampler.name, second.reinit_head, second.freeze_backbone) == ("cycle", True, True)
    assert second.epochs == 1 and second.files.folder.name == "02-crt"


@pytest.mark.slow
def test_decoupled_stage_2_keeps_the_backbone_bit_identical(tmp_path, data_dir):
    raw = tiny_config(data_dir, epochs=1)
    raw["stages"] = [{"name": "end2end"},
                     {"name": "crt", "freeze_backbone": True, "tau_normalise": True,
                      "optimizer": {"name": "adam", "lr": 0.01}}]
    run = train(parse_config(raw), tmp_path / "run", progress=False).run_dir
    stage1 = model_state(load_checkpoint(run / "stages/01-end2end/checkpoints/best.ckpt"))
    stage2 = model_state(load_checkpoint(run / "stages/02-crt/checkpoints/last.ckpt"))
    backbone = [k for k in stage1 if k.startswith("backbone.")]
    assert backbone and any("running_mean" in k for k in backbone)
    for key in backbone:  # weights and BatchNorm statistics alike
        assert torch.equal(stage1[key], stage2[key]), key
    assert not torch.equal(stage1["head.fc.weight"], stage2["head.fc.weight"])
    meta = json.loads((run / "model.json").read_text())
    tuning = meta["tau_normalisation"]
    assert str(tuning["tau"]) in tuning["scores"]  # JSON keys are strings
    assert tuning["scores"][str(tuning["tau"])] == max(tuning["scores"].values())
    exported = load_file(run / "model.safetensors")
    assert exported["head.tau"].item() == pytest.approx(meta["tau_normalisation"]["tau"])


@pytest.mark.slow
def test_progressive_resizing_second_stage_is_larger_and_starts_from_best(tmp_path, data_dir):
    raw = tiny_config(data_dir, epochs=1)
    raw["data"]["images"]["size"] = 32
    raw["data"]["images"]["store_size"] = 48
    raw["stages"] = [{"name": "small"}, {"name": "large", "image_size": 48, "batch_size": 16}]
    config = parse_config(raw)
    small, large = resolve_stages(config, tmp_path / "run")
    assert (small.image_size, small.batch_size, large.image_size, large.batch_size) == (32, 32, 48, 16)
    run = train(config, tmp_path / "run", progress=False).run_dir
    import pandas as pd

    steps = int(pd.read_csv(run / "stages/02-large/logs/metrics.csv")["step"].max())
    # 600 training images at batch 16 = 37 steps (batch 32 would be 18)
    assert steps >= 36
    assert json.loads((run / "model.json").read_text())["image_size"] == 48


def test_ranger_is_radam_with_lookahead():
    torch.manual_seed(0)
    target = torch.randn(5)
    start = torch.randn(5)

    def loss_of(p):
        return ((p - target) ** 2).sum()

    def radam_steps(optimizer, p, n):
        for _ in range(n):
            optimizer.zero_grad()
            loss_of(p).backward()
            optimizer.step()

    # Reference: plain RAdam, with the slow weights of Lookahead (k = 2, alpha = 0.5) done by hand.
    fast = start.clone().requires_grad_(True)
    radam = torch.optim.RAdam([fast], lr=0.1, betas=(0.95, 0.999), eps=1e-5)
    radam_steps(radam, fast, 2)
    slow = fast.detach().clone()  # timm synchronises the slow weights at the first k-th step
    radam_steps(radam, fast, 2)
    with torch.no_grad():
        slow += 0.5 * (fast - slow)
        fast.copy_(slow)
    radam_steps(radam, fast, 1)

    param = start.clone().requires_grad_(True)
    ranger = OPTIMIZERS.build("ranger", context={"params": [param]}, lr=0.1, lookahead_k=2, lookahead_alpha=0.5)
    radam_steps(ranger, param, 5)
    assert torch.allclose(param.detach(), fast.detach(), atol=1e-6)
    assert not torch.allclose(param.detach(), start)
    assert "state" in ranger.state_dict()


@pytest.mark.parametrize("name, params, checks", [
    ("constant", {"warmup_epochs": 1.0}, [(0, 0.1), (4, 0.5), (9, 1.0), (50, 1.0)]),
    ("step", {"step_size": 2, "gamma": 0.1}, [(0, 1.0), (19, 1.0), (20, 0.1), (40, 0.01)]),
    ("multistep", {"milestones": [1, 3], "gamma": 0.5}, [(9, 1.0), (10, 0.5), (29, 0.5), (30, 0.25)]),
    ("cosine", {"warmup_epochs": 0.0, "min_lr_ratio": 0.0}, [(0, 1.0), (50, 0.5), (100, 0.0)]),
])
def test_schedules_hand_values(name, params, checks):
    from cxrlt.registry import SCHEDULES

    factor = SCHEDULES.build(name, context={"steps_per_epoch": 10, "total_steps": 100}, **params)
    for step, value in checks:
        assert factor(step) == pytest.approx(value, abs=1e-9), (step, value)
    assert math.isfinite(factor(1000))


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_converts_the_weights_and_keeps_the_outputs(channels_last):
    from cxrlt.losses import build as build_loss
    from cxrlt.config import OptimizerSpec, ScheduleSpec
    from cxrlt.training.module import ClassifierModule

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet10t"), 3).eval()
    images = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        before = model(images)
    module = ClassifierModule(model, build_loss("bce"), OptimizerSpec(name="adam"), ScheduleSpec(name="constant"),
                              epochs=1, seed=0, channels_last=channels_last)
    conv = next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    with torch.no_grad():
        assert torch.allclose(module(images), before, atol=1e-5)
