"""Backbones, pooling, heads, the assembled model and pretrained-weight loading."""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

from cxrlt.config import ModelConfig
from cxrlt.errors import ConfigError
from cxrlt.models.backbones import GRAY_MEAN, GRAY_STD, PretrainedWeightsWarning, create_backbone
from cxrlt.models.build import build_model
from cxrlt.registry import POOLINGS

FEATURES = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # (1, 1, 2, 2)


def test_avg_and_max_pooling_hand_values():
    assert POOLINGS.build("avg")(FEATURES).item() == pytest.approx(3.0)
    assert POOLINGS.build("max")(FEATURES).item() == pytest.approx(6.0)


def test_lse_pooling_formula_and_limits():
    gamma = 0.5
    expected = 1 / gamma * math.log(sum(math.exp(gamma * v) for v in (1, 2, 3, 6)) / 4)
    assert POOLINGS.build("lse", gamma=gamma)(FEATURES).item() == pytest.approx(expected, rel=1e-6)
    assert POOLINGS.build("lse", gamma=1e-4)(FEATURES).item() == pytest.approx(3.0, abs=1e-3)
    assert POOLINGS.build("lse", gamma=200.0)(FEATURES).item() == pytest.approx(6.0, abs=0.01)
    # stable for large activations (naive exp would overflow)
    assert torch.isfinite(POOLINGS.build("lse", gamma=0.5)(FEATURES * 1e4)).all()


def test_gem_pooling_hand_values():
    assert POOLINGS.build("gem", p=1.0)(FEATURES).item() == pytest.approx(3.0, rel=1e-5)
    expected = ((1 + 8 + 27 + 216) / 4) ** (1 / 3)
    assert POOLINGS.build("gem", p=3.0)(FEATURES).item() == pytest.approx(expected, rel=1e-5)


def test_model_normalises_uint8_inside():
    model = build_model(ModelConfig(backbone="resnet18"), num_classes=3)
    images = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    expected = (1.0 - GRAY_MEAN) / GRAY_STD
    assert torch.allclose(model.normalise(images), torch.full((1, 1, 8, 8), expected))
    three = build_model(ModelConfig(backbone="resnet18", in_chans=3), num_classes=3)
    assert three.normalise(images).shape == (1, 3, 8, 8)


def test_linear_head_computes_fc_of_pooled_features():
    model = build_model(ModelConfig(backbone="resnet18", pooling="max"), num_classes=4).eval()
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        features = model.features(images)
        expected = features.amax(dim=(2, 3)) @ model.head.fc.weight.T + model.head.fc.bias
        assert torch.allclose(model(images), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [
    ("densenet121", 64), ("resnet50", 64), ("resnet101", 64), ("efficientnet_b0", 64), ("efficientnet_b3", 64),
    ("tf_efficientnetv2_s", 64), ("convnext_tiny", 64), ("convnext_small", 64), ("swin_base_patch4_window7_224", 224),
])
def test_spec_backbones_build_and_run_on_grayscale(name, size):
    model = build_model(ModelConfig(backbone=name, pooling="lse"), num_classes=5, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.randint(0, 256, (1, 1, size, size), dtype=torch.uint8))
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


def test_convnext_post_pool_norm_moves_to_head():
    model = build_model(ModelConfig(backbone="convnext_tiny"), num_classes=2)
    assert isinstance(model.head.post_pool, torch.nn.LayerNorm)
    assert isinstance(model.backbone.model.head.norm, torch.nn.Identity)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="timm has no model"):
        create_backbone("resnet_does_not_exist")


@pytest.fixture()
def rgb_resnet18_state():
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    return {k: v.clone() for k, v in reference.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_and_adapts_first_conv(tmp_path, rgb_resnet18_state, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(rgb_resnet18_state, str(path))
    else:
        torch.save(rgb_resnet18_state, path)
    backbone = create_backbone("resnet18", pretrained=path, in_chans=1)
    loaded = backbone.model.state_dict()
    # grayscale first conv = sum of the RGB filters (equivalent to a replicated gray input)
    assert torch.allclose(loaded["conv1.weight"], rgb_resnet18_state["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(loaded["layer4.1.conv2.weight"], rgb_resnet18_state["layer4.1.conv2.weight"])
    assert "fc.weight" not in loaded


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_in_weights_file_is_refused(tmp_path, rgb_resnet18_state, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": rgb_resnet18_state, "payload": _Exploit()}, handle)
    with pytest.raises(ConfigError, match="cannot read .*need code to unpickle are refused"):
        create_backbone("resnet18", pretrained=path)
    assert "this must never run" not in capsys.readouterr().out


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("resnet18", pretrained=tmp_path / "nope.safetensors")


def test_unreachable_hub_falls_back_to_random_init_with_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty cache: offline lookup must fail
    with pytest.warns(PretrainedWeightsWarning, match="RANDOM initialisation"):
        backbone = create_backbone("resnet18", pretrained=True)
    assert backbone.num_features == 512


def test_random_init_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsWarning)
        create_backbone("resnet18", pretrained=False)
