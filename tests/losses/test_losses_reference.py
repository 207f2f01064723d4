"""Losses against reference libraries and published numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from cxrlt.errors import ConfigError
from cxrlt.losses import build, effective_number_weights


def torchvision_focal(logits, targets, alpha, gamma):
    """torchvision's per-element focal loss, summed over classes, mean over images."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none").sum(1).mean()


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (0.9, 0.5), (0.25, 0.0), (None, 3.0)])
def test_focal_equals_torchvision(alpha, gamma):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=generator, dtype=torch.float64) * 4
    logits[0, :3] = torch.tensor([30.0, -30.0, 0.0], dtype=torch.float64)
    targets = (torch.rand(16, 7, generator=generator) < 0.3).double()
    ours = build("focal", alpha=alpha, gamma=gamma)(logits, targets)
    theirs = torchvision_focal(logits, targets, -1 if alpha is None else alpha, gamma)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-12)


def test_focal_soft_targets_and_smoothing_equal_torchvision_on_smoothed_targets():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 5, generator=generator, dtype=torch.float64) * 3
    soft = torch.rand(8, 5, generator=generator, dtype=torch.float64)  # e.g. MixUp's convex labels
    expected = torchvision_focal(logits, soft, 0.25, 2.0)
    assert float(build("focal")(logits, soft)) == pytest.approx(float(expected), rel=1e-12)
    hard = (soft > 0.5).double()
    s = 0.01  # seed 003
    smoothed = hard * (1 - s) + s / 2
    ours = build("focal", label_smoothing=s)(logits, hard)
    assert float(ours) == pytest.approx(float(torchvision_focal(logits, smoothed, 0.25, 2.0)), rel=1e-12)


# seed 001's NIH "identical split" training positives (ascending) and the weights the authors published
NIH_POSITIVES = [144, 978, 1158, 1690, 1799, 1950, 2279, 3263, 3705, 3988, 4375, 7996, 9261, 13914]
PUBLISHED_W_POS = [0.72023, 0.11403, 0.09780, 0.07011, 0.06646, 0.06210, 0.05460,
                   0.04131, 0.03769, 0.03580, 0.03363, 0.02394, 0.02249, 0.01981]


def test_effective_number_weights_reproduce_published_values():
    weights = effective_number_weights(NIH_POSITIVES, beta=0.999823008849558, scale=0.1)
    np.testing.assert_allclose(weights, PUBLISHED_W_POS, atol=1e-4)
    # the beta the authors' notebook derives: (N - 1) / N with N = 5650
    assert 0.999823008849558 == pytest.approx((5650 - 1) / 5650, abs=1e-15)


def test_effective_number_weights_sum_to_scale_times_classes():
    for beta in (1 - 2e-6, 1 - 2e-5, 1 - 2e-4, 1 - 7e-4, 1 - 2e-3):
        weights = effective_number_weights(NIH_POSITIVES, beta, 0.1)
        assert weights.sum() == pytest.approx(0.1 * 14)
        assert np.all(np.diff(weights) < 0)  # fewer positives, larger weight


def test_effective_number_weights_limits():
    # beta -> 0: every class weighs the same; beta -> 1: weights proportional to 1 / n
    np.testing.assert_allclose(effective_number_weights([1, 10, 100], 0.0, 1.0), [1, 1, 1])
    inverse = np.array([1, 0.1, 0.01])
    near_one = effective_number_weights([1, 10, 100], 1 - 1e-9, 1.0)
    np.testing.assert_allclose(near_one, 3 * inverse / inverse.sum(), rtol=1e-6)


def nih_counts(positives):
    return {"positives": positives, "negatives": [78468 - n for n in positives]}


def test_effective_number_focal_refuses_nonpositive_negative_weight():
    names = [f"c{i}" for i in range(14)]
    # the paper's literal s = 1 gives the two rarest classes w+ = 7.2 and 1.14, so w- < 0; the next has 0.98
    with pytest.raises(ConfigError) as error:
        build("effective_number_focal", class_counts=nih_counts(NIH_POSITIVES), class_names=names,
              beta=0.999823008849558, scale=1.0)
    message = str(error.value)
    assert "c0 (w+ = 7.202)" in message and "c1 (w+ = 1.14)" in message and "c2 " not in message
    # s = 0.1 (the authors' released weights) is accepted
    loss = build("effective_number_focal", class_counts=nih_counts(NIH_POSITIVES), beta=0.999823008849558)
    np.testing.assert_allclose(loss.negative_weight, 1 - np.asarray(PUBLISHED_W_POS), atol=1e-4)


def test_effective_number_losses_refuse_classes_without_positives():
    counts = {"positives": [0, 5], "negatives": [10, 5]}
    for name in ("effective_number_focal", "class_balanced"):
        with pytest.raises(ConfigError, match="Hernia has no positive"):
            build(name, class_counts=counts, class_names=["Hernia", "Mass"])
