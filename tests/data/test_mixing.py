"""Batch mixing: pixels from the right sources, label rules with NaN, probabilities, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from cxrlt.config import AugmentConfig
from cxrlt.data.mixing import CutMix, MixerChoice, MixUp, Mosaic, build_mixer, mix_labels
from cxrlt.errors import ConfigError
from cxrlt.registry import MIXERS

nan = float("nan")
B, H, W = 6, 20, 28


def constant_batch(batch: int = B, height: int = H, width: int = W) -> tuple[torch.Tensor, torch.Tensor]:
    """Image j is constant 10 (j + 1); its label is one-hot on class j."""
    values = 10 * (torch.arange(batch, dtype=torch.uint8) + 1)
    images = values.view(-1, 1, 1, 1).expand(batch, 1, height, width).contiguous()
    return images, torch.eye(batch)


def source_shares(out: torch.Tensor, batch: int = B) -> torch.Tensor:
    """(B, B): fraction of output i's pixels whose value identifies image j."""
    pixels = out.float() * (255.0 if out.dtype != torch.uint8 else 1.0)
    index = torch.round(pixels / 10).long() - 1
    assert torch.allclose(pixels, 10.0 * (index + 1).float(), atol=1e-3)
    counts = F.one_hot(index.flatten(1), batch).sum(dim=1).float()
    return counts / index[0].numel()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- label rules
A = [1.0, 0.0, 0.0, nan, nan, 0.3, 0.4, 0.6, 0.4]
P = [0.0, 0.0, nan, 1.0, nan, 0.9, 0.5, 0.5, nan]
TARGETS = torch.tensor([A, P])
SELF, SWAP = torch.tensor([0, 1]), torch.tensor([1, 0])


def test_union_rule_by_hand():
    out = mix_labels(TARGETS, [SELF, SWAP], [0.5, 0.5], "union")
    # clip(a + b); with b missing the result is known only when the known labels already reach 1.
    expected = [1.0, 0.0, nan, 1.0, nan, 1.0, 0.9, 1.0, nan]
    torch.testing.assert_close(out[0], torch.tensor(expected), equal_nan=True)
    torch.testing.assert_close(out[1], torch.tensor(expected), equal_nan=True)


def test_mix_rule_by_hand():
    out = mix_labels(TARGETS, [SELF, SWAP], [0.25, 0.75], "mix")
    # 0.25 own + 0.75 partner; missing wherever a source is missing.
    expected = torch.tensor([[0.25, 0.0, nan, nan, nan, 0.75, 0.475, 0.525, nan],
                             [0.75, 0.0, nan, nan, nan, 0.45, 0.425, 0.575, nan]])
    torch.testing.assert_close(out, expected, equal_nan=True)


def test_sources_with_zero_share_are_ignored_by_both_rules():
    for rule in ("union", "mix"):
        out = mix_labels(TARGETS, [SELF, SWAP], [1.0, 0.0], rule)
        torch.testing.assert_close(out, TARGETS, equal_nan=True)


def test_union_of_four_sources_clips_the_sum():
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, nan], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    sources = [torch.tensor([i]) for i in range(4)]
    out = mix_labels(targets, sources, [0.25] * 4, "union")
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, nan]]), equal_nan=True)
    out = mix_labels(targets, sources, [0.1, 0.2, 0.3, 0.4], "mix")
    torch.testing.assert_close(out, torch.tensor([[0.3, 0.3, nan]]), equal_nan=True)


# --------------------------------------------------------------------- mosaic
@pytest.mark.parametrize("seed", range(5))
def test_mosaic_crop_quadrants_hold_their_sources(seed):
    images, labels = constant_batch()
    mosaic = Mosaic(variant="crop")
    draw = mosaic.draw(B, H, W, rng(seed))
    out, _ = mosaic.mix(images, labels, draw)
    assert out.dtype == torch.uint8
    top, cy, left, cx = 0, draw.regions[0][1], 0, draw.regions[0][3]
    assert 0.25 * H - 0.5 <= cy <= 0.75 * H + 0.5 and 0.25 * W - 0.5 <= cx <= 0.75 * W + 0.5
    quadrants = [(slice(top, cy), slice(left, cx)), (slice(top, cy), slice(cx, W)),
                 (slice(cy, H), slice(left, cx)), (slice(cy, H), slice(cx, W))]
    np.testing.assert_array_equal(draw.sources[0], np.arange(B))
    for (rows, cols), source in zip(quadrants, draw.sources):
        for i in range(B):
            assert (out[i, 0, rows, cols] == 10 * (source[i] + 1)).all()


def test_mosaic_crop_copies_the_drawn_window_of_each_source():
    images = torch.randint(0, 256, (B, 1, H, W), dtype=torch.uint8, generator=generator(0))
    mosaic = Mosaic(variant="crop", center=(0.3, 0.7))
    draw = mosaic.draw(B, H, W, rng(1))
    out, _ = mosaic.mix(images, torch.eye(B), draw)
    for source, (top, bottom, left, right), (dy, dx) in zip(draw.sources, draw.regions, draw.offsets):
        h, w = bottom - top, right - left
        assert 0 <= dy <= H - h and 0 <= dx <= W - w
        for i in range(B):
            torch.testing.assert_close(out[i, :, top:bottom, left:right], images[source[i], :, dy:dy + h, dx:dx + w])


def test_mosaic_resize_puts_each_whole_source_into_a_regular_grid():
    images = torch.randint(0, 256, (B, 1, H, W), dtype=torch.uint8, generator=generator(0))
    mosaic = Mosaic(variant="resize")
    draw = mosaic.draw(B, H, W, rng(2))
    out, _ = mosaic.mix(images, torch.eye(B), draw)
    assert out.dtype == torch.float32 and 0.0 <= out.min() and out.max() <= 1.0
    assert [region for region in draw.regions] == [(0, 10, 0, 14), (0, 10, 14, 28), (10, 20, 0, 14), (10, 20, 14, 28)]
    for source, (top, bottom, left, right) in zip(draw.sources, draw.regions):
        reference = TF.resize(images[source].float() / 255, [bottom - top, right - left], antialias=True)
        torch.testing.assert_close(out[..., top:bottom, left:right], reference.clamp(0, 1))


@pytest.mark.parametrize("variant", ["crop", "resize"])
@pytest.mark.parametrize("seed", range(4))
def test_mosaic_labels_match_the_pixels(variant, seed):
    images, labels = constant_batch()
    center = (0.0, 1.0) if variant == "crop" else (0.2, 0.8)  # crop: quadrants may vanish
    shares_mix = Mosaic(variant=variant, label="mix", center=center, p=1.0)(images, labels, generator(seed))
    union = Mosaic(variant=variant, label="union", center=center, p=1.0)(images, labels, generator(seed))
    shares = source_shares(shares_mix[0])
    torch.testing.assert_close(union[0], shares_mix[0])
    # mix: each source's share of the output area; union: present at all.
    torch.testing.assert_close(shares_mix[1], shares)
    torch.testing.assert_close(union[1], (shares > 0).float())


def test_mosaic_union_with_missing_labels():
    images, _ = constant_batch(batch=4)
    # Class 0 positive only in image 0, class 1 missing in image 2, class 2 missing in 1 and positive in 3.
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, nan], [0.0, nan, 0.0], [0.0, 0.0, 1.0]])
    mosaic = Mosaic(center=(0.5, 0.5))
    draw = mosaic.draw(4, H, W, rng(0))
    _, out = mosaic.mix(images, targets, draw)
    for i in range(4):
        present = {int(source[i]) for source in draw.sources}
        assert out[i, 0] == (1.0 if 0 in present else 0.0)
        assert torch.isnan(out[i, 1]) == (2 in present)
        expected_2 = 1.0 if 3 in present else (nan if 1 in present else 0.0)
        torch.testing.assert_close(out[i, 2], torch.tensor(expected_2), equal_nan=True)


# ---------------------------------------------------------------------- mixup
@pytest.mark.parametrize("seed", range(4))
def test_mixup_pixels_are_the_convex_combination(seed):
    images = torch.randint(0, 256, (B, 1, H, W), dtype=torch.uint8, generator=generator(seed))
    mixup = MixUp(alpha=4.0)
    draw = mixup.draw(B, H, W, rng(seed))
    out, _ = mixup.mix(images, torch.eye(B), draw)
    lam, partner = draw.lam, draw.sources[1]
    expected = (lam * images.double() + (1 - lam) * images[partner].double()) / 255
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_mixup_labels_follow_lambda_read_back_from_the_pixels(seed):
    images, labels = constant_batch()
    out, mixed = MixUp(p=1.0, label="mix")(images, labels, generator(seed))
    _, union = MixUp(p=1.0, label="union")(images, labels, generator(seed))
    for i in range(B):
        partner = int(torch.nonzero(union[i] * (torch.arange(B) != i)).flatten()[0]) if union[i].sum() > 1 else i
        if partner == i:
            torch.testing.assert_close(mixed[i], labels[i])
            continue
        va, vb = 10.0 * (i + 1), 10.0 * (partner + 1)
        lam = (out[i, 0, 0, 0].double() * 255 - vb) / (va - vb)
        assert mixed[i, i].double() == pytest.approx(float(lam), abs=1e-5)
        assert mixed[i, partner].double() == pytest.approx(1 - float(lam), abs=1e-5)
        assert union[i].sum() == 2 and union[i, i] == 1 and union[i, partner] == 1


def test_mixup_lambda_is_beta_alpha_alpha():
    draws = np.array([MixUp(alpha=4.0).draw(2, 4, 4, rng(seed)).lam for seed in range(4000)])
    # Beta(4, 4): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 1/36.
    assert draws.mean() == pytest.approx(0.5, abs=0.01)
    assert draws.var() == pytest.approx(1 / 36, rel=0.08)


# --------------------------------------------------------------------- cutmix
@pytest.mark.parametrize("seed", range(8))
def test_cutmix_pastes_one_box_and_weights_by_its_true_area(seed):
    images, labels = constant_batch()
    cutmix = CutMix(alpha=1.0, label="mix")
    draw = cutmix.draw(B, H, W, rng(seed))
    out, mixed = cutmix.mix(images, labels, draw)
    assert out.dtype == torch.uint8
    top, bottom, left, right = draw.regions[1]
    box = torch.zeros(H, W, dtype=torch.bool)
    box[top:bottom, left:right] = True
    partner = draw.sources[1]
    for i in range(B):
        assert (out[i, 0][box] == 10 * (partner[i] + 1)).all() and (out[i, 0][~box] == 10 * (i + 1)).all()
    # The label weight is the pasted fraction of the pixels, whatever lambda was drawn.
    torch.testing.assert_close(mixed, source_shares(out))
    pasted = box.float().mean().item()
    assert draw.weights == pytest.approx((1 - pasted, pasted))
    side = np.sqrt(1 - draw.lam)
    assert bottom - top <= int(H * side) and right - left <= int(W * side)


def test_cutmix_unclipped_box_has_the_floored_sides():
    cutmix = CutMix()
    seen = 0
    for seed in range(50):
        draw = cutmix.draw(4, 100, 120, rng(seed))
        top, bottom, left, right = draw.regions[1]
        side = np.sqrt(1 - draw.lam)
        if 0 < top and bottom < 100 and 0 < left and right < 120:
            seen += 1
            assert (bottom - top, right - left) == (int(100 * side), int(120 * side))
    assert seen > 5


def test_cutmix_union_counts_the_partner_only_when_visible():
    images, labels = constant_batch()
    for seed in range(20):
        out, union = CutMix(label="union", p=1.0)(images, labels, generator(seed))
        torch.testing.assert_close(union, (source_shares(out) > 0).float())


def test_cutmix_mix_rule_propagates_missing_only_from_a_contributing_source():
    images, _ = constant_batch(batch=2)
    targets = torch.tensor([[1.0, 0.0], [nan, 1.0]])
    cutmix = CutMix(label="mix")
    draw = cutmix.draw(2, H, W, rng(3))
    assert 0 < draw.weights[1] < 1
    _, out = cutmix.mix(images, targets, draw)
    # Image 0 receives part of image 1 (class 0 missing there) and vice versa.
    partner = draw.sources[1]
    share = draw.weights[1]
    for i in range(2):
        j = int(partner[i])
        if j == i:
            torch.testing.assert_close(out[i], targets[i], equal_nan=True)
        else:
            assert torch.isnan(out[i, 0])
            assert out[i, 1].item() == pytest.approx((1 - share) * targets[i, 1].item() + share * targets[j, 1].item())


# -------------------------------------------------------- probability, choice
MIXER_PARAMS = {"mosaic": {}, "mosaic_resize": {"variant": "resize"}, "mixup": {}, "cutmix": {}}


def build(key: str, **params):
    name = key.split("_")[0]
    return MIXERS.build(name, **{**MIXER_PARAMS[key], **params})


def spy(mixer):
    calls = []
    original = mixer.apply

    def apply(images, targets, rng):
        calls.append(1)
        return original(images, targets, rng)

    mixer.apply = apply
    return calls


@pytest.mark.parametrize("key", sorted(MIXER_PARAMS))
def test_probability_zero_leaves_the_batch_and_one_always_mixes(key):
    images, labels = constant_batch()
    never = build(key, p=0.0)
    calls = spy(never)
    for seed in range(20):
        out, targets = never(images, labels, generator(seed))
        assert out is images and targets is labels
    assert not calls
    always = build(key, p=1.0)
    calls = spy(always)
    for seed in range(20):
        always(images, labels, generator(seed))
    assert len(calls) == 20


@pytest.mark.parametrize("key", sorted(MIXER_PARAMS))
def test_same_generator_seed_same_batch(key):
    images = torch.randint(0, 256, (B, 1, H, W), dtype=torch.uint8, generator=generator(0))
    labels = torch.tensor(np.where(np.random.default_rng(0).random((B, 5)) < 0.2, np.nan,
                                   np.random.default_rng(1).random((B, 5)) < 0.4), dtype=torch.float32)
    mixer = build(key, p=1.0)
    first = mixer(images, labels, generator(11))
    again = mixer(images.clone(), labels.clone(), generator(11))
    torch.testing.assert_close(first[0], again[0], rtol=0, atol=0)
    torch.testing.assert_close(first[1], again[1], rtol=0, atol=0, equal_nan=True)
    other = mixer(images, labels, generator(12))
    assert not torch.equal(first[0], other[0])


def test_choice_applies_at_most_one_mixer_with_its_probability():
    first, second = MixUp(p=0.2), CutMix(p=0.3)
    calls_first, calls_second = spy(first), spy(second)
    choice = MixerChoice([first, second])
    images, labels = constant_batch(batch=2, height=4, width=4)
    unchanged = 0
    for seed in range(2000):
        out, _ = choice(images, labels, generator(seed))
        unchanged += out is images
    # Binomial(2000, p): sd 18, 20 and 22.
    assert abs(len(calls_first) - 400) < 80 and abs(len(calls_second) - 600) < 90 and abs(unchanged - 1000) < 100
    assert len(calls_first) + len(calls_second) + unchanged == 2000


def test_probabilities_adding_up_to_more_than_one_are_a_config_error():
    with pytest.raises(ConfigError, match="add up to 1.2"):
        build_mixer([{"name": "mixup", "p": 0.7}, {"name": "cutmix", "p": 0.5}])


def test_mixing_runs_on_a_float_batch_too():
    images, labels = constant_batch()
    out, _ = Mosaic(variant="crop", p=1.0)(images.float() / 255, labels, generator(0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(source_shares(out).sum(dim=1), torch.ones(B))


def test_mismatched_batch_is_rejected():
    with pytest.raises(ValueError, match="same B"):
        MixUp(p=1.0)(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, 5), generator(0))


# -------------------------------------------------------------------- config
def test_yaml_mixing_list_validates_and_builds():
    config = AugmentConfig.model_validate({"mixing": [
        {"name": "mosaic", "variant": "resize", "p": 0.5},
        {"name": "mixup", "alpha": 4, "label": "union", "p": 0.25},
        "cutmix",
    ]})
    assert config.mixing[0].params == {"variant": "resize", "label": "union", "center": None, "p": 0.5}
    assert config.mixing[1].params == {"alpha": 4.0, "label": "union", "p": 0.25}
    assert config.mixing[2].params == {"alpha": 1.0, "label": "mix", "p": 0.5}
    with pytest.raises(ConfigError, match="add up to 1.25"):
        build_mixer(config.mixing)
    choice = build_mixer(config.mixing[:2])
    assert [type(mixer) for mixer in choice.mixers] == [Mosaic, MixUp]
    assert choice.mixers[0].center == (0.5, 0.5) and choice.mixers[1].alpha == 4.0


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mixup", {"alpha": 0}, "alpha: Input should be greater than 0"),
        ("cutmix", {"label": "max"}, "label: Input should be 'union' or 'mix'"),
        ("mosaic", {"variant": "grid"}, "variant"),
        ("mosaic", {"center": [0.8, 0.2]}, "0 <= low <= high <= 1"),
        ("mixup", {"p": -0.1}, "p: Input should be greater than or equal to 0"),
    ],
)
def test_bad_mixer_parameters_are_config_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        MIXERS.validate(name, params)


def test_parse_config_accepts_the_augment_section():
    pytest.importorskip("cxrlt.data.sources", reason="data sources registry not on this branch yet")
    from cxrlt.config import parse_config

    config = parse_config({
        "data": {"sources": [{"name": "csv", "labels": "labels.csv"}]},
        "augment": {"train": [{"name": "random_crop", "size": 224}, {"name": "hflip", "p": 0.5}],
                    "mixing": [{"name": "mosaic", "variant": "crop", "label": "union", "p": 0.5}]},
    })
    assert config.augment.train[0].params == {"size": 224, "p": 1.0}
    assert config.augment.mixing[0].params["label"] == "union"
