"""The parameter and FLOP figures docs/performance.md (section 7) states for ViT-S, DINOv2-S and ResNet-50."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from cxrlt.config import ModelConfig
from cxrlt.models.build import build_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_backbones", REPO / "benchmarks" / "bench_backbones.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_documented_parameters_and_flops(bench, one_thread):
    image = torch.zeros(1, 1, 224, 224, dtype=torch.uint8)
    figures = {}
    for name in ("resnet50", "vit_small_patch16_224", "vit_small_patch14_dinov2"):
        model = build_model(ModelConfig(backbone=name), 26, image_size=224).eval()
        figures[name] = (sum(p.numel() for p in model.parameters()) / 1e6, bench.forward_flops(model, image) / 1e9)
    assert figures["resnet50"] == pytest.approx((23.6, 8.02), abs=0.05)
    assert figures["vit_small_patch16_224"] == pytest.approx((21.5, 8.40), abs=0.05)
    assert figures["vit_small_patch14_dinov2"] == pytest.approx((21.5, 10.95), abs=0.05)
    doc = (REPO / "docs" / "performance.md").read_text()
    assert "vit_small_patch16_224              21.5       8.40" in doc
