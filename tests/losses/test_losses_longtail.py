"""The long-tail baselines: distribution-balanced, logit-adjusted, LDAM and deferred re-weighting (docs/methods.md).

Each loss is checked against values worked out by hand, against an
independent float64 reference written from the authors' code (for DB: the
order of operations of their `ResampleLoss`), with `gradcheck`, at +-100
logits, with missing labels, and for DB on images without any positive.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxrlt.errors import ConfigError
from cxrlt.losses import build

NAN = float("nan")
COUNTS = {"positives": [2.0, 8.0, 40.0], "negatives": [8.0, 8.0, 10.0]}  # priors 0.2, 0.5, 0.8
NEW = ["distribution_balanced", "logit_adjusted", "ldam"]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def rows(seed: int = 0, n: int = 7):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=generator, dtype=torch.float64) * 3
    targets = (torch.rand(n, 3, generator=generator) < 0.4).double()
    targets[0] = 0.0  # an image without any positive
    return logits, targets


# ------------------------------------------------------------ by hand
def test_distribution_balanced_by_hand():
    loss = build("distribution_balanced", class_counts=COUNTS)
    logits = torch.zeros(1, 3, dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    # r_i = (1/n_i) / (1/2 + 1/40) = [0.952381, 0.238095, 0.047619]; r^ = 0.1 + sigmoid(10 (r - 0.2))
    r = [(1 / n) / (1 / 2 + 1 / 40) for n in (2, 8, 40)]
    weight = [0.1 + sigmoid(10 * (value - 0.2)) for value in r]
    # v_i = 0.05 log(p / (1 - p)) for p = 0.2, 0.5, 0.8
    v = [0.05 * math.log(0.25), 0.0, 0.05 * math.log(4.0)]
    expected = [weight[0] * softplus(-v[0]), weight[1] * softplus(2 * v[1]) / 2, weight[2] * softplus(-v[2])]
    assert loss.per_element(logits, targets)[0].tolist() == pytest.approx(expected, rel=1e-12)
    assert weight == pytest.approx([1.0995, 0.6941, 0.2789], abs=1e-4)  # the rare class's image counts most


def test_distribution_balanced_image_without_positive_gets_alpha_plus_one():
    """No positive: no instance-level frequency, r = +inf, r^ = alpha + 1 (the limit; the authors' code's 1/0)."""
    loss = build("distribution_balanced", class_counts=COUNTS)
    empty = torch.zeros(2, 3, dtype=torch.float64)
    assert loss.rebalance_weight(empty).tolist() == [[1.1] * 3] * 2
    # the limit: one positive of an ever more frequent class drives r of the others up, r^ to alpha + 1
    counts = {"positives": [2.0, 8.0, 1e12], "negatives": [8.0, 8.0, 1e12]}
    nearly = build("distribution_balanced", class_counts=counts).rebalance_weight(
        torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))
    assert nearly[0, :2].tolist() == pytest.approx([1.1, 1.1], abs=1e-12)
    # and the loss of such an image is r^ times the negative-tolerant negatives: finite, with gradients
    logits = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    value = loss(logits, empty[:1])
    value.backward()
    value = value.detach()
    v = [0.05 * math.log(0.25), 0.0, 0.05 * math.log(4.0)]
    assert float(value) == pytest.approx(sum(1.1 * softplus(2 * (z + b)) / 2 for z, b in zip([0.3, -1.0, 2.0], v)))
    assert torch.isfinite(logits.grad).all()


def test_distribution_balanced_focal_by_hand():
    loss = build("distribution_balanced", class_counts=COUNTS, focal=True, rebalance=False)
    logits = torch.tensor([[1.0, -0.5, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    v = [0.05 * math.log(0.25), 0.0, 0.05 * math.log(4.0)]
    z = [1.0 + v[0], -0.5 + v[1], 0.0 + v[2]]
    expected = [
        2 * sigmoid(-z[0]) ** 2 * softplus(-z[0]),
        2 * sigmoid(2 * z[1]) ** 2 * softplus(2 * z[1]) / 2,
        2 * sigmoid(2 * z[2]) ** 2 * softplus(2 * z[2]) / 2,
    ]
    assert loss.per_element(logits, targets)[0].tolist() == pytest.approx(expected, rel=1e-12)


def test_distribution_balanced_ablations():
    logits, targets = rows()
    bce = build("bce")(logits, targets)
    neither = build("distribution_balanced", class_counts=COUNTS, rebalance=False, negative_tolerant=False)
    assert float(neither(logits, targets)) == pytest.approx(float(bce), rel=1e-12)
    rebalance_only = build("distribution_balanced", class_counts=COUNTS, negative_tolerant=False)
    weights = rebalance_only.rebalance_weight(targets)
    expected = (weights * build("bce").per_element(logits, targets)).sum() / len(logits)
    assert float(rebalance_only(logits, targets)) == pytest.approx(float(expected), rel=1e-12)
    # negative-tolerant only: every weight 1
    ntr_only = build("distribution_balanced", class_counts=COUNTS, rebalance=False)
    assert ntr_only.rebalance_weight(targets).tolist() == [[1.0] * 3] * len(targets)


def test_logit_adjusted_by_hand():
    loss = build("logit_adjusted", class_counts=COUNTS)
    logits = torch.zeros(1, 3, dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    # z + log(p / (1 - p)): log 0.25, 0, log 4 -> -log sigmoid(log 0.25) = log 5, log 2, -log(1 - 0.8) = log 5
    assert loss.per_element(logits, targets)[0].tolist() == pytest.approx([math.log(5), math.log(2), math.log(5)])
    half = build("logit_adjusted", class_counts=COUNTS, tau=0.5)
    assert float(half.per_element(logits, targets)[0, 0]) == pytest.approx(math.log(3))  # 1 + (1/0.25)^0.5
    plain = build("logit_adjusted", class_counts=COUNTS, tau=0.0)
    assert float(plain(logits, targets)) == pytest.approx(3 * math.log(2))


def test_ldam_by_hand():
    counts = {"positives": [1.0, 16.0], "negatives": [10.0, 10.0]}
    loss = build("ldam", class_counts=counts, scale=2.0)
    np.testing.assert_allclose(loss.margins, [0.5, 0.25])  # C / n^(1/4) with the largest 0.5
    logits = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    positive = loss.per_element(logits, torch.ones(1, 2, dtype=torch.float64))
    assert positive[0].tolist() == pytest.approx([math.log(2), math.log(2)])  # exactly on the margin
    negative = loss.per_element(logits, torch.zeros(1, 2, dtype=torch.float64))
    assert negative[0].tolist() == pytest.approx([softplus(1.0), softplus(0.5)])  # no margin on negatives


def test_drw_switches_class_balanced_weights_on_at_its_epoch():
    counts = {"positives": [1.0, 16.0], "negatives": [10.0, 10.0]}
    loss = build("bce", class_counts=counts, drw_after=2, drw_beta=0.5)
    logits, targets = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    plain = build("bce")(logits, targets)
    for epoch in (0, 1):
        loss.set_epoch(epoch)
        assert float(loss(logits, targets)) == pytest.approx(float(plain))
    # a_k = (1 - 0.5) / (1 - 0.5^n) = 1 and 0.5 / (1 - 2^-16); w = 2 a / sum a
    a = [1.0, 0.5 / (1 - 2.0 ** -16)]
    w = [2 * value / sum(a) for value in a]
    terms = build("bce").per_element(logits, targets)[0].tolist()
    for epoch in (2, 7):
        loss.set_epoch(epoch)
        assert loss.drw_active
        assert float(loss(logits, targets)) == pytest.approx(w[0] * terms[0] + w[1] * terms[1], rel=1e-12)
    loss.set_epoch(0)  # a new stage's loss, or a rewind: off again
    assert float(loss(logits, targets)) == pytest.approx(float(plain))
    assert build("ldam", class_counts=counts, drw_after=0).drw_active  # on from the first epoch
    with pytest.raises(ConfigError, match="needs the per-class positive and negative label counts"):
        build("bce", drw_after=3)


# --------------------------------------------------- float64 references
def reference_db(logits, targets, counts, alpha=0.1, beta=10.0, mu=0.2, neg_scale=2.0, kappa=0.05,
                 focal=False, gamma=2.0, balance=2.0):
    """DB in the order of the authors' ResampleLoss (numpy float64, hard labels): weights, bias, scale, BCE, focal."""
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    positives = np.asarray(counts["positives"], dtype=np.float64)
    train_num = positives + np.asarray(counts["negatives"], dtype=np.float64)
    freq_inv = 1.0 / positives
    with np.errstate(divide="ignore"):
        repeat_rate = (y * freq_inv).sum(axis=1, keepdims=True)
        pos_weight = freq_inv[None, :] / repeat_rate
    weight = 1.0 / (1.0 + np.exp(-beta * (pos_weight - mu))) + alpha
    init_bias = -np.log(train_num / positives - 1.0) * kappa
    x = x + init_bias
    x = x * (1 - y) * neg_scale + x * y
    weight = weight / neg_scale * (1 - y) + weight * y
    bce = np.logaddexp(0.0, x) - y * x  # binary_cross_entropy_with_logits, unweighted
    loss = weight * bce
    if focal:
        pt = np.exp(-bce)
        loss = balance * (1 - pt) ** gamma * loss
    return loss.sum() / len(x)


@pytest.mark.parametrize("focal", [False, True])
def test_distribution_balanced_matches_the_authors_order_of_operations(focal):
    logits, targets = rows(3, n=12)
    loss = build("distribution_balanced", class_counts=COUNTS, focal=focal)
    assert float(loss(logits, targets)) == pytest.approx(reference_db(logits, targets, COUNTS, focal=focal), rel=1e-12)


def test_logit_adjusted_and_ldam_match_float64_references():
    logits, targets = rows(4, n=12)
    x, y = logits.numpy(), targets.numpy()
    p = np.array(COUNTS["positives"]) / (np.array(COUNTS["positives"]) + np.array(COUNTS["negatives"]))
    z = x + 0.7 * np.log(p / (1 - p))
    expected = (np.logaddexp(0, z) - y * z).sum() / len(x)
    got = build("logit_adjusted", class_counts=COUNTS, tau=0.7)(logits, targets)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    n = np.array(COUNTS["positives"])
    margin = 0.3 * (1 / n ** 0.25) / (1 / n ** 0.25).max()
    s = 10.0
    expected = (y * np.logaddexp(0, -s * (x - margin)) + (1 - y) * np.logaddexp(0, s * x)).sum() / len(x)
    got = build("ldam", class_counts=COUNTS, max_margin=0.3, scale=s)(logits, targets)
    assert float(got) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------- stability, masks
VARIANTS = [
    ("distribution_balanced", {}),
    ("distribution_balanced", {"focal": True}),
    ("distribution_balanced", {"focal": True, "focal_gamma": 0.5, "label_smoothing": 0.1}),
    ("logit_adjusted", {}),
    ("ldam", {}),
    ("ldam", {"drw_after": 0}),
]


@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_gradcheck(name, params):
    logits, targets = rows(5, n=4)
    targets[1, 2] = 0.35  # a soft target
    loss = build(name, class_counts=COUNTS, **params)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, targets), (logits,))


@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_finite_at_plus_minus_100(name, params):
    loss = build(name, class_counts=COUNTS, **params)
    for dtype in (torch.float32, torch.float64):
        logits = torch.tensor([[100.0, -100.0, 100.0], [-100.0, 100.0, -100.0]], dtype=dtype, requires_grad=True)
        targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
        value = loss(logits, targets)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        assert (logits.grad[0, 1] < 0) and (logits.grad[0, 2] > 0)  # the wrong ones are pushed the right way


@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_nan_labels_are_left_out(name, params):
    logits, targets = rows(6)
    targets[2, 1] = NAN
    targets[4, 0] = NAN
    loss = build(name, class_counts=COUNTS, **params)
    logits.requires_grad_(True)
    value = loss(logits, targets)
    value.backward()
    missing = torch.isnan(targets)
    assert torch.isfinite(value) and (logits.grad[missing] == 0).all()
    # a missing label is what a masked one is, whatever value it is given (for DB: not a positive of the image)
    for fill in (0.0, 1.0):
        filled = torch.nan_to_num(targets, nan=fill)
        assert float(loss(logits.detach(), filled, mask=~missing)) == pytest.approx(float(value), rel=1e-12)


def test_bad_counts_are_config_errors_naming_the_class():
    names = ["Atelectasis", "Hernia", "Mass"]
    no_positive = {"positives": [5.0, 0.0, 3.0], "negatives": [5.0, 10.0, 7.0]}
    for name in NEW:
        with pytest.raises(ConfigError, match="Hernia has no positive"):
            build(name, class_counts=no_positive, class_names=names)
        with pytest.raises(ConfigError, match="needs the per-class positive and negative label counts"):
            build(name)
    no_negative = {"positives": [5.0, 10.0, 3.0], "negatives": [5.0, 0.0, 7.0]}
    with pytest.raises(ConfigError, match="Hernia has no positive or no negative.*kappa: 0"):
        build("distribution_balanced", class_counts=no_negative, class_names=names)
    with pytest.raises(ConfigError, match="Hernia has no positive or no negative.*tau: 0"):
        build("logit_adjusted", class_counts=no_negative, class_names=names)
    # switching the term off accepts such a class
    build("distribution_balanced", class_counts=no_negative, kappa=0.0)
    build("logit_adjusted", class_counts=no_negative, tau=0.0)
    with pytest.raises(ConfigError, match="drw_after"):
        build("bce", class_counts=no_positive, class_names=names, drw_after=1)
