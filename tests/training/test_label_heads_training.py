"""Label-aware heads train (toy task); the engine's training step uses the head's loss."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrlt.config import ModelConfig, OptimizerSpec, ScheduleSpec
from cxrlt.losses import build as build_loss
from cxrlt.losses import diversity_loss
from cxrlt.models.build import build_model

CLASSES = ["Atelectasis", "Cardiomegaly", "Edema", "Mass"]


def blobs(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k present (35%): a bright 8 x 8 square somewhere in quadrant k of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 4, generator=g) < 0.35).float()
    pixels = torch.rand(n, 1, size, size, generator=g) * 60
    half = size // 2
    for k in range(4):
        top, left = (k // 2) * half, (k % 2) * half
        ys = torch.randint(4, half - 12, (n,), generator=g)
        xs = torch.randint(4, half - 12, (n,), generator=g)
        for i in torch.nonzero(labels[:, k])[:, 0].tolist():
            pixels[i, 0, top + ys[i]:top + ys[i] + 8, left + xs[i]:left + xs[i] + 8] += 180
    return pixels.clamp(0, 255).to(torch.uint8), labels


HEADS = {
    "linear": {"name": "linear"},
    "gcn": {"name": "gcn"},
    "experts": {"name": "experts", "experts": 2},
    "experts_gcn_mha": {"name": "experts", "experts": 2, "classifier": "gcn", "mha": "separate", "mha_heads": 4},
    "query_separate": {"name": "query", "dim": 64, "layers": 1, "heads": 4, "ffn": 128},
    "query_shared": {"name": "query", "dim": 64, "layers": 1, "heads": 4, "ffn": 128, "separate": False},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HEADS))
def test_head_learns_a_toy_task(name, one_thread):
    """60 Adam steps on resnet10t at 64 px (about 15 s on one CPU thread): mean AUC far above 0.5."""
    torch.manual_seed(0)
    train_x, train_y = blobs(512, seed=0)
    test_x, test_y = blobs(256, seed=1)
    context = {"class_names": CLASSES, "train_labels": train_y.numpy()}
    model = build_model(ModelConfig(backbone="resnet10t", head=HEADS[name]), 4, context=context)
    criterion = build_loss("bce")
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        batch = torch.randint(0, len(train_x), (16,), generator=generator)
        loss = model.training_loss(criterion, model(train_x[batch], training_outputs=True), train_y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(test_x)).numpy()
    auc = np.mean([roc_auc_score(test_y[:, k], probs[:, k]) for k in range(4)])
    assert auc > 0.9, f"{name}: mean AUC {auc:.3f}"


# ------------------------------------------------------------- engine
@pytest.fixture()
def classifier_module():
    """`ClassifierModule` (imported normally: re-importing it would leave a second copy of the module behind)."""
    from cxrlt.training.module import ClassifierModule

    return ClassifierModule


def test_training_step_adds_the_experts_diversity_term(classifier_module):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet10t", head={"name": "experts", "experts": 3}), 4)
    criterion = build_loss("bce")
    module = classifier_module(model, criterion, OptimizerSpec(name="adam"), ScheduleSpec(name="constant"),
                               epochs=1, seed=0)
    images, targets = blobs(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no trainer attached: Lightning warns that logging is skipped
        loss = module.training_step((images, targets, torch.arange(4)), 0)
    with torch.no_grad():
        outputs = model(images, training_outputs=True)
    assert outputs.shape == (3, 4, 4)
    expected = sum(criterion(z, targets) for z in outputs) + 0.2 * diversity_loss(outputs)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_frozen_stage_freezes_and_fixes_the_experts_stages(classifier_module):
    model = build_model(ModelConfig(backbone="resnet10t", head={"name": "experts", "experts": 2}), 4)
    module = classifier_module(model, build_loss("bce"), OptimizerSpec(name="adam"), ScheduleSpec(name="constant"),
                               epochs=1, seed=0, freeze_backbone=True)
    module.train()
    module.on_train_epoch_start()
    assert not any(p.requires_grad for p in model.head.stages.parameters())
    assert not model.head.stages.training and not model.backbone.training
    assert all(p.requires_grad for p in model.head.classifiers.parameters())
