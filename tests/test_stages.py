"""Training strategies: decoupled stage 2, tau-normalisation, progressive resizing, Ranger."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cxrlt.config import ModelConfig, parse_config
from cxrlt.models.build import build_model
from cxrlt.training.checkpoints import load_checkpoint, model_state
from cxrlt.training.optim import OPTIMIZERS
from cxrlt.training.run import train
from cxrlt.training.stages import resolve_stages
from tests.test_training import tiny_config


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


def test_decoupled_stage_defaults_to_class_balanced_sampling_and_reinit(tmp_path, data_dir):
    config = parse_config({**tiny_config(data_dir), "stages": [
        {"name": "end2end"}, {"name": "crt", "freeze_backbone": True, "epochs": 1}]})
    first, second = resolve_stages(config, tmp_path)
    assert (first.sampler.name, first.reinit_head, first.freeze_backbone) == ("instance", False, False)
    assert (second.sampler.name, second.reinit_head, second.freeze_backbone) == ("cycle", True, True)
    assert second.epochs == 1 and second.folder.name == "02-crt"


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
    logs = (run / "stages/02-large/logs/metrics.csv").read_text().splitlines()
    steps = max(int(line.split(",")[1]) for line in logs[1:])
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
    from cxrlt.training.optim import SCHEDULES

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
