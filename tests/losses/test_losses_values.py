"""Loss values against hand-computed arithmetic (math module only, independent of cxrlt)."""

from __future__ import annotations

import math

import pytest
import torch

from cxrlt.losses import build

NAN = float("nan")
LOG2 = math.log(2.0)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Three classes with positive fractions a = 0.01, 0.2, 0.5 (P + N = 1000).
COUNTS = {"positives": [10, 200, 500], "negatives": [990, 800, 500]}
A = [0.01, 0.2, 0.5]
LOGITS = [-3.0, -0.4, 0.0, 0.7, 2.5]


def per_element(name: str, x: float, y: float, k: int, **params) -> float:
    """The loss of one (logit, target) entry of class k, read from a 1-image batch."""
    loss = build(name, class_counts=COUNTS, **params)
    logits = torch.zeros(1, 3, dtype=torch.float64)
    targets = torch.full((1, 3), NAN, dtype=torch.float64)
    logits[0, k], targets[0, k] = x, y
    return float(loss(logits, targets))


# ------------------------------------------------------------ written out
def test_bce_batch_written_out():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, NAN]])
    # -log sig(2) - log(1 - sig(-1)) - log(1 - sig(0.5)), over 2 images
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert float(build("bce")(logits, targets)) == pytest.approx(expected, rel=1e-6)


def test_weighted_bce_written_out():
    # class 1: P=200, N=800 -> w+ = 1000/200 = 5, w- = 1000/800 = 1.25; at p = 0.5 each log term is log 2
    assert per_element("weighted_bce", 0.0, 1.0, 1) == pytest.approx(5 * LOG2, rel=1e-12)
    assert per_element("weighted_bce", 0.0, 0.0, 1) == pytest.approx(1.25 * LOG2, rel=1e-12)
    # class 0: w+ = 100 at logit 2: 100 * log(1 + e^-2)
    assert per_element("weighted_bce", 2.0, 1.0, 0) == pytest.approx(100 * math.log(1 + math.exp(-2)), rel=1e-12)


def test_focal_written_out():
    # p = 0.5: positive 0.25 * 0.5^2 * log 2, negative 0.75 * 0.5^2 * log 2
    assert per_element("focal", 0.0, 1.0, 0) == pytest.approx(0.25 * 0.25 * LOG2, rel=1e-12)
    assert per_element("focal", 0.0, 0.0, 0) == pytest.approx(0.75 * 0.25 * LOG2, rel=1e-12)
    # alpha off (thesis eq. 5), gamma 1, logit log 3 (p = 0.75): (1/4) * log(4/3)
    assert per_element("focal", math.log(3), 1.0, 2, alpha=None, gamma=1.0) == pytest.approx(0.25 * math.log(4 / 3))


def test_asl_written_out():
    # p = 0.5, gamma+ = 0: log 2; negative: p_m = 0.45, 0.45^4 * -log(0.55)
    assert per_element("asl", 0.0, 1.0, 0) == pytest.approx(LOG2, rel=1e-12)
    assert per_element("asl", 0.0, 0.0, 0) == pytest.approx(0.45**4 * -math.log(0.55), rel=1e-12)
    # an easy negative below the margin costs nothing: p = sig(-4) = 0.018 < 0.05
    assert per_element("asl", -4.0, 0.0, 0) == 0.0
    # eps clipping: a positive at logit -30 costs -log(1e-8), not 30
    assert per_element("asl", -30.0, 1.0, 0) == pytest.approx(-math.log(1e-8), rel=1e-12)


def test_class_aware_written_out():
    # class 1, a = 0.2, p = 0.5: w+ = 0.8^0.5, L+ = 0.8^0.5 log 2
    assert per_element("class_aware", 0.0, 1.0, 1) == pytest.approx(math.sqrt(0.8) * LOG2, rel=1e-12)
    # w- = 1 - 0.8^0.5 (p, not p_m), L- = -w- log(1 - (0.5 - 0.2)) = w- log(1/0.7)
    assert per_element("class_aware", 0.0, 0.0, 1) == pytest.approx((1 - math.sqrt(0.8)) * math.log(1 / 0.7), rel=1e-12)
    # without margin: (1 - 0.8^0.5) log 2
    assert per_element("class_aware", 0.0, 0.0, 1, margin=0.0) == pytest.approx((1 - math.sqrt(0.8)) * LOG2, rel=1e-12)


def effective_weights(beta: float, scale: float) -> list[float]:
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS["positives"]]
    return [scale * 3 * r / sum(raw) for r in raw]


def test_effective_number_focal_written_out():
    w = effective_weights(0.9998, 0.1)
    # p = 0.5, a = 0.5, g = 1: positive w+ * 0.5 * 0.5 * log 2, negative (1 - w+) * 0.5 * 0.5 * log 2
    for k in range(3):
        assert per_element("effective_number_focal", 0.0, 1.0, k) == pytest.approx(w[k] * 0.25 * LOG2, rel=1e-9)
        assert per_element("effective_number_focal", 0.0, 0.0, k) == pytest.approx((1 - w[k]) * 0.25 * LOG2, rel=1e-9)


def test_class_balanced_written_out():
    w = effective_weights(0.9999, 1.0)
    assert sum(w) == pytest.approx(3.0)
    for k in range(3):
        assert per_element("class_balanced", 0.0, 1.0, k) == pytest.approx(w[k] * LOG2, rel=1e-9)
        # focal variant, gamma 2: w * 0.5^2 * log 2
        assert per_element("class_balanced", 0.0, 0.0, k, gamma=2.0) == pytest.approx(w[k] * 0.25 * LOG2, rel=1e-9)


# ------------------------------------------------------- grid of points
def reference(name: str, x: float, y: int, k: int) -> float:
    """Each loss's formula (SPEC 1) in scalar arithmetic, default parameters."""
    p = sig(x)
    a = A[k]
    if name == "bce":
        return -math.log(p) if y else -math.log(1 - p)
    if name == "weighted_bce":
        return -math.log(p) / a if y else -math.log(1 - p) / (1 - a)
    if name == "focal":
        return -0.25 * (1 - p) ** 2 * math.log(p) if y else -0.75 * p**2 * math.log(1 - p)
    if name == "asl":
        pm = max(p - 0.05, 0.0)
        return -math.log(p) if y else -(pm**4) * math.log(1 - pm)
    if name == "class_aware":
        pm = max(p - 0.2, 0.0)
        return -((1 - a) ** (1 - p)) * math.log(p) if y else -(1 - (1 - a) ** p) * math.log(1 - pm)
    if name == "effective_number_focal":
        w = effective_weights(0.9998, 0.1)[k]
        return -w * 0.5 * (1 - p) * math.log(p) if y else -(1 - w) * 0.5 * p * math.log(1 - p)
    if name == "class_balanced":
        w = effective_weights(0.9999, 1.0)[k]
        return -w * math.log(p) if y else -w * math.log(1 - p)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["bce", "weighted_bce", "focal", "asl", "class_aware", "effective_number_focal", "class_balanced"]
)
def test_grid_of_points(name):
    loss = build(name, class_counts=COUNTS)
    rows = [(x, y) for x in LOGITS for y in (0, 1)]
    logits = torch.tensor([[x] * 3 for x, _ in rows], dtype=torch.float64)
    targets = torch.tensor([[float(y)] * 3 for _, y in rows], dtype=torch.float64)
    got = loss.per_element(logits, targets)
    for i, (x, y) in enumerate(rows):
        for k in range(3):
            assert float(got[i, k]) == pytest.approx(reference(name, x, y, k), rel=1e-10, abs=1e-15), (x, y, k)
    # the reduction: sum over classes, divided by the number of images
    assert float(loss(logits, targets)) == pytest.approx(float(got.sum()) / len(rows), rel=1e-12)


def test_label_smoothing_keras_sense():
    s = 0.1
    # BCE with y' = 1 - s/2 = 0.95 at logit 1
    p = sig(1.0)
    expected = -(0.95 * math.log(p) + 0.05 * math.log(1 - p))
    assert per_element("bce", 1.0, 1.0, 0, label_smoothing=s) == pytest.approx(expected, rel=1e-12)
    # ASL mixes its two sides linearly: 0.05 L+ + 0.95 L- for a smoothed negative
    pm = p - 0.05
    expected = 0.05 * -math.log(p) + 0.95 * -(pm**4) * math.log(1 - pm)
    assert per_element("asl", 1.0, 0.0, 0, label_smoothing=s) == pytest.approx(expected, rel=1e-12)
    # focal uses torchvision / Keras' p_t form: a_t (1 - p_t)^g BCE(y', p)
    y = 0.95
    pt = y * p + (1 - y) * (1 - p)
    at = y * 0.25 + (1 - y) * 0.75
    expected = at * (1 - pt) ** 2 * -(y * math.log(p) + (1 - y) * math.log(1 - p))
    assert per_element("focal", 1.0, 1.0, 0, label_smoothing=s) == pytest.approx(expected, rel=1e-12)
