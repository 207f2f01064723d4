"""Loss behaviour: masking, up-weighting, CAL's thesis properties, stability, gradients, errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cxrlt.config import LossSpec
from cxrlt.errors import ConfigError
from cxrlt.losses import build
from cxrlt.registry import LOSSES

NAN = float("nan")
NAMES = ["Atelectasis", "Effusion", "Mass", "Hernia"]
COUNTS = {"positives": [1100, 1300, 580, 23], "negatives": [9900, 9700, 10420, 10977]}
ALL = ["bce", "weighted_bce", "focal", "asl", "class_aware", "effective_number_focal", "class_balanced",
       "distribution_balanced", "logit_adjusted", "ldam"]
VARIANTS = [(name, {}) for name in ALL] + [
    ("focal", {"gamma": 0.5, "label_smoothing": 0.05}),
    ("asl", {"gamma_pos": 1.0, "gamma_neg": 0.5, "margin": 0.0}),
    ("class_aware", {"class_weights": "sqrt_inverse"}),
    ("class_aware", {"class_weights": "effective_number", "margin": 0.0}),
    ("class_balanced", {"gamma": 0.5}),
]


def batch(seed: int = 0, dtype=torch.float64, scale: float = 2.5):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(6, 4, generator=generator) * scale).to(dtype)
    targets = (torch.rand(6, 4, generator=generator) < 0.4).to(dtype)
    targets[0, 1] = NAN
    targets[3, 3] = NAN
    targets[5, 0] = 0.3  # a soft target
    return logits, targets


# ------------------------------------------------------------- masking
# Distribution-balanced weights a whole image by its positives, so a missing label is "not a positive" there
# rather than droppable after the fact; its masking is tested in test_losses_longtail.py.
@pytest.mark.parametrize("name", [name for name in ALL if name != "distribution_balanced"])
def test_nan_masking_equals_dropping_the_entries(name):
    logits, targets = batch()
    loss = build(name, class_counts=COUNTS)
    observed = ~torch.isnan(targets)
    full = loss.per_element(logits, torch.nan_to_num(targets, nan=1.0))
    expected = float(full[observed].sum()) / logits.shape[0]
    assert float(loss(logits, targets)) == pytest.approx(expected, rel=1e-12)
    # logits at missing entries do not matter and get no gradient
    moved = logits.clone()
    moved[~observed] = 40.0
    moved.requires_grad_(True)
    value = loss(moved, targets)
    value.backward()
    assert float(value.detach()) == pytest.approx(expected, rel=1e-12)
    assert torch.all(moved.grad[~observed] == 0)
    # an explicit mask acts like NaN
    assert float(loss(logits, torch.nan_to_num(targets, nan=0.0), mask=observed)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["weighted_bce", "class_aware", "focal"])
def test_missing_column_equals_a_loss_without_that_class(name):
    logits, targets = batch(1)
    targets[:, 2] = NAN
    keep = [0, 1, 3]
    fewer = {key: [values[i] for i in keep] for key, values in COUNTS.items()}
    whole = build(name, class_counts=COUNTS)(logits, targets)
    dropped = build(name, class_counts=fewer)(logits[:, keep], targets[:, keep])
    assert float(whole) == pytest.approx(float(dropped), rel=1e-12)


# -------------------------------------------------------- up-weighting
@pytest.mark.parametrize("name", ALL)
def test_upweighting_multiplies_exactly_the_named_classes(name):
    logits, targets = batch(2)
    plain = build(name, class_counts=COUNTS, class_names=NAMES).per_element(logits, targets)
    loss = build(name, class_counts=COUNTS, class_names=NAMES, upweight_classes=["mass", "Hernia"], upweight_factor=3.0)
    weighted = loss.per_element(logits, targets)
    factor = torch.tensor([1.0, 1.0, 3.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(weighted, plain * factor, rtol=1e-12, atol=0)
    assert loss.upweighted == [2, 3]


def test_upweight_worst_k_follows_validation_ap_and_survives_checkpoints():
    logits, targets = batch(3)
    loss = build("bce", upweight_worst_k=2, upweight_factor=2.0, upweight_classes=["Effusion"], class_names=NAMES)
    plain = build("bce").per_element(logits, targets)
    assert loss.update_class_factors([0.10, 0.80, NAN, 0.05]) == [0, 1, 3]  # NaN AP is never picked
    torch.testing.assert_close(loss.per_element(logits, targets), plain * torch.tensor([2.0, 2.0, 1.0, 2.0]).double())
    assert loss.update_class_factors([0.9, 0.8, 0.2, 0.3]) == [1, 2, 3]
    restored = build("bce", upweight_worst_k=2, upweight_factor=2.0, upweight_classes=["Effusion"], class_names=NAMES)
    restored.load_state_dict(loss.state_dict())
    assert restored.upweighted == [1, 2, 3]
    torch.testing.assert_close(restored.per_element(logits, targets), loss.per_element(logits, targets))


def test_upweighting_errors():
    with pytest.raises(ConfigError, match="needs the class names"):
        build("bce", upweight_classes=["Mass"])
    with pytest.raises(ConfigError, match="unknown classes \\['Masss'\\]"):
        build("focal", upweight_classes=["Masss"], class_names=NAMES)
    with pytest.raises(ConfigError, match="exceeds the 4 classes"):
        build("bce", upweight_worst_k=5, class_names=NAMES)
    with pytest.raises(ConfigError, match="upweight_factor"):
        build("bce", upweight_factor=0.0)


# ------------------------------------------------- CAL (thesis fig. 10)
# NIH ChestX-ray14 totals (SPEC 8): Infiltration 19,894 and Hernia 227 of 112,120 images
HEAD_TAIL = {"positives": [19894, 227], "negatives": [112120 - 19894, 112120 - 227]}


def cal_terms(p: np.ndarray, **params):
    loss = build("class_aware", class_counts=HEAD_TAIL, **params)
    logits = torch.logit(torch.tensor(p, dtype=torch.float64)).unsqueeze(1).repeat(1, 2)
    positive = loss.per_element(logits, torch.ones_like(logits))
    negative = loss.per_element(logits, torch.zeros_like(logits))
    return positive.numpy(), negative.numpy()


def test_cal_positive_loss_is_larger_for_the_rarer_class():
    p = np.linspace(0.01, 0.99, 99)
    positive, _ = cal_terms(p)
    assert np.all(positive[:, 1] > positive[:, 0])
    # and it lies between a_i-discounted and plain BCE: (1 - a)^(1-p) <= w+ <= 1
    a_head = 19894 / 112120
    assert np.all(positive[:, 0] >= (1 - a_head) * -np.log(p))
    assert np.all(positive[:, 1] <= -np.log(p) + 1e-15)


def test_cal_negative_losses_are_small_and_close_across_classes():
    p = np.linspace(0.01, 0.99, 99)
    _, negative = cal_terms(p, margin=0.0)
    bce_negative = -np.log1p(-p)
    a = np.array([19894, 227]) / 112120
    # w- = 1 - (1-a)^p <= a: every class' negative loss is at most a_i times BCE's
    assert np.all(negative <= a * bce_negative[:, None] + 1e-15)
    # so head and tail negatives differ by less than a fifth of BCE's negative loss (a_head = 0.177)
    assert np.all(np.abs(negative[:, 0] - negative[:, 1]) < 0.18 * bce_negative)


def test_cal_margin_zeroes_easy_negatives():
    p = np.array([0.001, 0.05, 0.15, 0.2, 0.2001, 0.5])
    logits = torch.logit(torch.tensor(p)).unsqueeze(1).repeat(1, 2).requires_grad_(True)
    loss = build("class_aware", class_counts=HEAD_TAIL)
    terms = loss.per_element(logits, torch.zeros_like(logits))
    terms.sum().backward()
    easy = torch.tensor(p) <= 0.2 + 1e-12
    assert torch.all(terms[easy] == 0) and torch.all(logits.grad[easy] == 0)
    assert torch.all(terms[~easy] > 0)


def test_cal_class_weights_have_mean_one():
    for method in ("inverse", "sqrt_inverse", "effective_number"):
        loss = build("class_aware", class_counts=COUNTS, class_weights=method)
        factors = loss.class_factors()
        assert factors.mean() == pytest.approx(1.0)
        assert np.all(np.diff(factors[[1, 0, 2, 3]]) > 0)  # rarer class, larger weight
    a = np.array(COUNTS["positives"]) / 11000
    inverse = build("class_aware", class_counts=COUNTS, class_weights="inverse").class_factors()
    np.testing.assert_allclose(inverse, (1 / a) / np.mean(1 / a))


def test_cal_detach_weights_changes_gradient_not_value():
    logits, targets = batch(4)
    logits.requires_grad_(True)
    grads, values = [], []
    for detach in (False, True):
        logits.grad = None
        value = build("class_aware", class_counts=COUNTS, detach_weights=detach)(logits, targets)
        value.backward()
        values.append(float(value.detach()))
        grads.append(logits.grad.clone())
    assert values[0] == pytest.approx(values[1], rel=1e-14)
    assert not torch.allclose(grads[0], grads[1])


# ------------------------------------------------ numerics and precision
@pytest.mark.parametrize("name,params", VARIANTS)
def test_gradcheck_float64(name, params):
    logits, targets = batch(5, scale=1.0)
    # keep clear of the kinks p = margin (0.05, 0.2), where finite differences straddle a corner
    p = torch.sigmoid(logits)
    logits = torch.where((p - 0.05).abs() < 0.02, logits + 0.3, logits)
    logits = torch.where((torch.sigmoid(logits) - 0.2).abs() < 0.02, logits + 0.3, logits)
    loss = build(name, class_counts=COUNTS, **params)
    assert torch.autograd.gradcheck(lambda x: loss(x, targets), (logits.requires_grad_(True),))


@pytest.mark.parametrize("name,params", VARIANTS)
def test_extreme_logits_are_finite(name, params):
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0], [-100.0, 100.0, 0.0, 100.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.5, NAN]])
    loss = build(name, class_counts=COUNTS, **params)
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value) and torch.all(torch.isfinite(logits.grad))
    assert float(value.detach()) > 1.0  # the confidently wrong entries cost a lot, without overflowing


@pytest.mark.parametrize("name", ALL)
def test_bf16_autocast_is_close_to_fp32(name):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 4)
    features = torch.randn(32, 16)
    _, targets = batch(6, dtype=torch.float32)
    targets = targets.repeat(6, 1)[:32]
    loss = build(name, class_counts=COUNTS)
    reference = loss(layer(features), targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        value = loss(logits, targets)
    assert logits.dtype == torch.bfloat16 and value.dtype == torch.float32
    value.backward()
    assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=5e-3)
    assert torch.all(torch.isfinite(layer.weight.grad))


# ------------------------------------------------------ building errors
def test_registry_holds_the_losses():
    assert LOSSES.names() == sorted(ALL)


def test_build_errors_are_config_errors():
    with pytest.raises(ConfigError, match="unknown loss 'focall'; choose one of: asl, bce"):
        build("focall")
    with pytest.raises(ConfigError, match="gamma.*valid number"):
        build("focal", gamma="two")
    with pytest.raises(ConfigError, match="gama: unknown key"):
        build("focal", gama=2.0)
    with pytest.raises(ConfigError, match="class_weights"):
        build("class_aware", class_counts=COUNTS, class_weights="inverted")
    with pytest.raises(ConfigError, match="gamma.*greater than or equal to 0"):
        build("asl", gamma_neg=-1.0)


@pytest.mark.parametrize("name", ["weighted_bce", "class_aware", "effective_number_focal", "class_balanced"])
def test_losses_needing_counts_say_so(name):
    with pytest.raises(ConfigError, match="needs the per-class positive and negative label counts"):
        build(name)


def test_class_counts_forms_and_errors():
    stats = SimpleNamespace(positives=np.array(COUNTS["positives"]), negatives=np.array(COUNTS["negatives"]))
    logits, targets = batch(7)
    by_object = build("weighted_bce", class_counts=stats)(logits, targets)
    by_mapping = build("weighted_bce", class_counts=COUNTS)(logits, targets)
    assert float(by_object) == float(by_mapping)
    with pytest.raises(ConfigError, match="no 'negatives'"):
        build("class_aware", class_counts={"positives": [1, 2]})
    with pytest.raises(ConfigError, match="2 positives but 3 negatives"):
        build("class_aware", class_counts={"positives": [1, 2], "negatives": [1, 2, 3]})
    with pytest.raises(ConfigError, match="Hernia has no positive or no negative"):
        build("weighted_bce", class_counts={"positives": [3, 0], "negatives": [5, 8]}, class_names=["Mass", "Hernia"])
    with pytest.raises(ConfigError, match="4 class names but class_counts for 2"):
        build("bce", class_counts={"positives": [3, 1], "negatives": [5, 8]}, class_names=NAMES)


def test_yaml_component_builds_the_loss():
    spec = LossSpec.model_validate({"name": "focal", "alpha": 0.25, "gamma": 2, "label_smoothing": 0.01})
    assert spec.params["gamma"] == 2.0 and spec.params["upweight_factor"] == 1.0
    loss = spec.build(class_counts=COUNTS, class_names=NAMES)
    assert loss.gamma == 2.0 and loss.label_smoothing == 0.01


def test_shape_and_target_errors():
    loss = build("bce", class_names=NAMES)
    with pytest.raises(ValueError, match="3 classes but the loss was built for 4"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="must both be \\[batch, classes\\]"):
        loss(torch.zeros(2, 4), torch.zeros(2, 4, 1))
    with pytest.raises(ValueError, match="CheXpert -1"):
        loss(torch.zeros(1, 4), torch.tensor([[1.0, -1.0, 0.0, 0.0]]))


def test_value_is_sum_over_classes_mean_over_images():
    logits = torch.zeros(4, 3)
    targets = torch.zeros(4, 3)
    targets[0] = NAN  # an image with every label missing still counts in the batch
    assert float(build("bce")(logits, targets)) == pytest.approx(3 * 3 * math.log(2) / 4)
