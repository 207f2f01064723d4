"""RIDE diversity term (seed 002 eqs. 2-4) against brute-force Bernoulli KLs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cxrlt.losses import DiversityLoss, diversity_loss


def kl(q: float, p: float) -> float:
    """Bernoulli KL(q || p), written out."""
    return q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))


def brute_force(logits: np.ndarray) -> tuple[float, float]:
    """(approximate, pairwise) for [n, batch, classes] logits, with explicit loops."""
    n, batch, classes = logits.shape
    p = 1 / (1 + np.exp(-logits))
    approximate = pairwise = 0.0
    for b in range(batch):
        for c in range(classes):
            p_bar = p[:, b, c].mean()
            approximate += sum(kl(p_bar, p[i, b, c]) for i in range(n))
            pairwise += sum(kl(p[i, b, c], p[j, b, c]) for i, j in itertools.permutations(range(n), 2))
    return -approximate / (n - 1) / batch, -pairwise / (n - 1) / batch


def test_two_experts_one_class_written_out():
    # p1 = 0.8, p2 = 0.4 -> p_bar = 0.6
    z = torch.logit(torch.tensor([0.8, 0.4], dtype=torch.float64)).reshape(2, 1, 1)
    approximate = -(0.6 * math.log(0.6 / 0.8) + 0.4 * math.log(0.4 / 0.2)  # KL(p_bar || p1)
                    + 0.6 * math.log(0.6 / 0.4) + 0.4 * math.log(0.4 / 0.6))  # KL(p_bar || p2)
    pairwise = -(0.8 * math.log(0.8 / 0.4) + 0.2 * math.log(0.2 / 0.6)  # KL(p1 || p2)
                 + 0.4 * math.log(0.4 / 0.8) + 0.6 * math.log(0.6 / 0.2))  # KL(p2 || p1)
    assert float(diversity_loss(z)) == pytest.approx(approximate, rel=1e-12)
    assert float(diversity_loss(z, "pairwise")) == pytest.approx(pairwise, rel=1e-12)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_matches_brute_force(n):
    logits = np.random.default_rng(n).normal(0, 2, size=(n, 3, 5))
    approximate, pairwise = brute_force(logits)
    z = torch.tensor(logits)
    assert float(diversity_loss(z)) == pytest.approx(approximate, rel=1e-10)
    assert float(diversity_loss(list(z), "pairwise")) == pytest.approx(pairwise, rel=1e-10)


def test_zero_for_identical_experts_and_negative_otherwise():
    same = torch.tensor([[3.0, -100.0, 100.0, 0.2]]).expand(4, 1, 4)
    for form in ("approximate", "pairwise"):
        assert abs(float(diversity_loss(same, form))) < 1e-6
        different = same.clone()
        different[2, 0, 0] += 0.5
        assert float(diversity_loss(different, form)) < 0


def test_where_approximate_and_pairwise_must_agree():
    """Only identical experts make them equal (KL is strictly convex in its first argument);
    for small disagreement both are quadratic and approximate = pairwise / (2n) to leading order."""
    rng = np.random.default_rng(0)
    n = 4
    centre = rng.normal(0, 1.5, size=(1, 2, 3))
    spread = rng.normal(0, 1, size=(n, 2, 3))
    for step, tolerance in ((1e-2, 3e-2), (1e-4, 3e-4)):
        z = torch.tensor(centre + step * spread)
        approximate, pairwise = float(diversity_loss(z)), float(diversity_loss(z, "pairwise"))
        assert approximate == pytest.approx(pairwise / (2 * n), rel=tolerance)
    # in general (Jensen): sum_i KL(p_bar || p_i) <= (1/n) sum_{i != j} KL(p_j || p_i)
    z = torch.tensor(rng.normal(0, 3, size=(n, 2, 3)))
    assert float(diversity_loss(z)) >= float(diversity_loss(z, "pairwise")) / n


def test_finite_and_differentiable():
    z = torch.tensor([[[100.0, -100.0, 0.0]], [[-100.0, 100.0, 0.5]], [[100.0, 100.0, -3.0]]], requires_grad=True)
    for form in ("approximate", "pairwise"):
        value = diversity_loss(z, form)
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(value) and torch.all(torch.isfinite(grad))
    z64 = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    for form in ("approximate", "pairwise"):
        assert torch.autograd.gradcheck(lambda x: diversity_loss(x, form), (z64,))


def test_bf16_autocast():
    z = torch.randn(4, 8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = diversity_loss(z.to(torch.bfloat16))
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(float(diversity_loss(z.to(torch.bfloat16).float())), rel=1e-6)


def test_diversity_loss_module_is_lambda_times_the_term():
    z = torch.randn(4, 6, 3, dtype=torch.float64)
    assert float(DiversityLoss(0.5)(z)) == pytest.approx(0.5 * float(diversity_loss(z)), rel=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 experts"):
        diversity_loss(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="unknown diversity form"):
        DiversityLoss(form="exact")
    with pytest.raises(ValueError, match="\\[experts, batch, classes\\]"):
        diversity_loss(torch.zeros(2, 3))
