"""Contracts every registered method keeps, tested over every registered name.

The cases come from the registries themselves (`cxrlt.registry`), so a head,
pooling, loss, sampler, transform or mixer is tested the day it is
registered. Each is built from a config section with its defaults; only
required parameters (and sizes that keep a case fast) are given, in
`MINIMAL`. A new method with a required parameter fails here until it is
given one.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cxrlt.config import LossSpec, MixingSpec, ModelConfig, PoolingSpec, SamplerSpec, TransformSpec
from cxrlt.data.transforms import DeterministicTransform, Pipeline
from cxrlt.explain.cam import compute_maps, supports_cam
from cxrlt.inference.saved_model import export_model, load_model
from cxrlt.models.build import build_model
from cxrlt.models.card import ModelCard
from cxrlt.models.heads import CamUnsupported
from cxrlt.registry import HEADS, LOSSES, MIXERS, POOLINGS, SAMPLERS, TRANSFORMS

# (kind, name) -> the parameters a case needs beyond the defaults: required ones, or smaller sizes.
MINIMAL = {
    ("head", "query"): {"dim": 32, "layers": 1, "heads": 4, "ffn": 64},
    ("sampler", "repeat_factor"): {"threshold": 0.3},
    ("transform", "resize"): {"size": 24},
    ("transform", "center_crop"): {"size": 24},
    ("transform", "random_crop"): {"size": 24},
}
SHARED_LOSS_OPTIONS = {"label_smoothing": 0.0, "upweight_classes": (), "upweight_factor": 1.0, "upweight_worst_k": 0,
                       "drw_after": None, "drw_beta": 0.9999}

CLASSES = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Mass"]
# 60 images x 4 classes, every class with positives and negatives, some images with none.
LABELS = (np.random.default_rng(0).random((60, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.float32)
LABELS[:4] = np.eye(4, dtype=np.float32)
COUNTS = {"positives": LABELS.sum(axis=0).tolist(), "negatives": (1 - LABELS).sum(axis=0).tolist()}
IMAGES = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def spec(kind: str, name: str, **params) -> dict:
    return {"name": name, **MINIMAL.get((kind, name), {}), **params}


# -------------------------------------------------------------------- heads
def tiny_model(head: dict | None = None, pooling: str = "avg"):
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet10t", head=head or {"name": "linear"}, pooling=pooling)
    return build_model(config, len(CLASSES), context={"class_names": CLASSES, "train_labels": LABELS}), config


def assert_round_trip(model, config, tmp_path):
    """Exported and loaded back (without training labels), the model gives identical logits."""
    model.eval()
    export_model(model, tmp_path / "model", ModelCard(model=config, classes=CLASSES, image_size=64))
    loaded, _ = load_model(tmp_path / "model")
    with torch.no_grad():
        assert torch.equal(loaded(IMAGES), model(IMAGES))


@pytest.mark.parametrize("name", HEADS.names())
def test_head_forward_gradient_and_round_trip(name, tmp_path, one_thread):
    model, config = tiny_model(spec("head", name))
    model.train()
    targets = torch.tensor(LABELS[:2])
    loss = model.training_loss(LOSSES.build("bce"), model(IMAGES, training_outputs=True), targets)
    loss.backward()
    # Feature parts a head owns (experts' copies of the last stage) keep timm's zero-initialised last norm of
    # each residual branch, so some of their weights get no gradient at first: they are checked as a whole.
    features = {id(p) for module in model.head.feature_modules() for p in module.parameters()}
    head = dict(model.head.named_parameters())
    assert head, f"head {name!r} has no parameters"
    for key, parameter in head.items():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
            assert id(parameter) in features or parameter.grad.abs().sum() > 0, f"no gradient reaches {key}"
    assert all(any(p.grad.abs().sum() > 0 for p in module.parameters()) for module in model.head.feature_modules())
    model.eval()
    with torch.no_grad():
        logits = model(IMAGES)
    assert logits.shape == (2, len(CLASSES)) and torch.isfinite(logits).all()
    assert_round_trip(model, config, tmp_path)


@pytest.mark.parametrize("name", HEADS.names())
def test_head_class_maps_average_to_the_logits_where_cam_is_supported(name, one_thread):
    model, _ = tiny_model(spec("head", name))
    model.eval()
    with torch.no_grad():
        features = model.features(IMAGES)
        logits = model.head(features)
        if not supports_cam(model):
            with pytest.raises(CamUnsupported):
                model.head.class_maps(features)
        else:
            # average pooling and no post-pool norm: the spatial mean of the class maps is the logits
            maps = model.head.class_maps(features)
            assert maps.shape[:2] == (2, len(CLASSES))
            assert torch.allclose(maps.mean(dim=(2, 3)), logits, atol=1e-5)
    explained = compute_maps(model, IMAGES, [0, 3])
    assert explained.method == ("cam" if supports_cam(model) else "gradcam")
    assert explained.maps.shape == (2, 2, 64, 64) and torch.isfinite(explained.maps).all()


# ----------------------------------------------------------------- poolings
@pytest.mark.parametrize("name", POOLINGS.names())
def test_pooling_is_a_mean_of_the_positions(name):
    pooling = PoolingSpec.model_validate(spec("pooling", name)).build()
    constant = torch.full((2, 3, 4, 5), 0.7)
    assert torch.allclose(pooling(constant), torch.full((2, 3), 0.7), atol=1e-5)
    maps = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)).add(0.1).requires_grad_()
    pooled = pooling(maps)
    assert pooled.shape == (2, 3)
    low, high = maps.detach().amin(dim=(2, 3)), maps.detach().amax(dim=(2, 3))
    assert (pooled >= low - 1e-5).all() and (pooled <= high + 1e-5).all()
    pooled.sum().backward()
    assert torch.isfinite(maps.grad).all() and (maps.grad.abs().sum(dim=(2, 3)) > 0).all()


@pytest.mark.parametrize("name", POOLINGS.names())
def test_pooling_round_trips_in_a_saved_model(name, tmp_path, one_thread):
    model, config = tiny_model(pooling=spec("pooling", name))
    assert_round_trip(model, config, tmp_path)


# -------------------------------------------------------------------- losses
def build_loss(name: str, **params):
    return LossSpec.model_validate(spec("loss", name, **params)).build(class_counts=COUNTS, class_names=CLASSES)


def batch(rows: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits from -8 to 8 and 0/1 targets with some NaN (missing)."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.rand(rows, len(CLASSES), generator=g, dtype=torch.float64) - 0.5) * 16
    targets = (torch.rand(rows, len(CLASSES), generator=g) < 0.4).double()
    targets[torch.rand(rows, len(CLASSES), generator=g) < 0.2] = float("nan")
    return logits, targets


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_declares_the_shared_options(name):
    fields = LOSSES.entry(name).params.model_fields
    assert {key: fields[key].default for key in SHARED_LOSS_OPTIONS} == SHARED_LOSS_OPTIONS


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_masks_missing_labels_and_averages_over_images(name):
    loss = build_loss(name)
    logits, targets = batch()
    logits.requires_grad_()
    value = loss(logits, targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    missing = torch.isnan(targets)
    assert torch.isfinite(logits.grad).all() and (logits.grad[missing] == 0).all()
    assert (logits.grad[~missing] != 0).any()
    observed = torch.where(missing, torch.zeros_like(targets), targets)
    assert torch.allclose(loss(logits, observed, mask=~missing), value)
    halves = [loss(logits[rows], targets[rows]) for rows in (slice(0, 3), slice(3, 6))]
    assert torch.allclose(value, (halves[0] + halves[1]) / 2)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_shared_options_mean_the_same_for_every_loss(name):
    logits, targets = batch()
    plain = build_loss(name)(logits, targets)
    every_class = build_loss(name, upweight_classes=CLASSES, upweight_factor=3.0)(logits, targets)
    assert torch.allclose(every_class, 3 * plain)
    smoothed = build_loss(name, label_smoothing=0.2)(logits, targets)
    assert torch.allclose(smoothed, build_loss(name)(logits, targets * 0.8 + 0.1))


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_state_round_trip_keeps_the_worst_classes(name):
    logits, targets = batch()
    loss = build_loss(name, upweight_worst_k=1, upweight_factor=2.0)
    assert loss.update_class_factors([0.9, 0.2, 0.5, float("nan")]) == [1]
    restored = build_loss(name, upweight_worst_k=1, upweight_factor=2.0)
    restored.load_state_dict(loss.state_dict())
    assert restored.upweighted == [1]
    assert torch.equal(restored(logits, targets), loss(logits, targets))
    assert not torch.allclose(build_loss(name)(logits, targets), loss(logits, targets))


# ------------------------------------------------------------------ samplers
def build_sampler(name: str, num_samples: int | None, seed: int = 0, rank: int = 0, world_size: int = 1):
    sampler = SamplerSpec.model_validate(spec("sampler", name))
    return sampler.build(labels=LABELS, num_samples=num_samples, seed=seed, rank=rank, world_size=world_size)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_draws_num_samples_indices_in_range(name):
    sampler = build_sampler(name, 50)
    drawn = list(sampler)
    assert len(sampler) == len(drawn) == 50
    assert all(isinstance(i, int) and 0 <= i < len(LABELS) for i in drawn)
    assert drawn == list(build_sampler(name, 50))  # a function of the seed alone
    assert np.array_equal(sampler.global_indices(0, 20), sampler.global_indices(0, 50)[:20])  # prefix-consistent
    sampler.set_epoch(1)
    assert list(sampler) != drawn


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_ranks_share_the_global_stream(name):
    single = build_sampler(name, 50)
    shares = [list(build_sampler(name, 50, rank=rank, world_size=3)) for rank in range(3)]
    assert [len(share) for share in shares] == [17, 17, 17]  # ceil(50 / 3) each
    interleaved = [share[i] for i in range(17) for share in shares]
    assert np.array_equal(interleaved, single.global_indices(0, 51))


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_draws_labels_at_its_expected_frequency(name):
    sampler = build_sampler(name, 12_000)
    drawn = np.bincount(sampler.global_indices(0), minlength=len(LABELS))
    empirical = drawn @ sampler.indicators / drawn.sum()
    np.testing.assert_allclose(empirical, sampler.expected_frequency(), atol=0.025)


# ---------------------------------------------------------------- transforms
STORED = np.random.default_rng(2).integers(0, 256, (40, 36), dtype=np.uint8)


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_transform_keeps_uint8_and_its_window(name):
    transform = TransformSpec.model_validate(spec("transform", name)).build()
    out = transform(STORED, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.ndim == 2
    if isinstance(transform, DeterministicTransform):
        side = transform.window(*STORED.shape)[4]
        assert out.shape == (side, side)
    else:
        assert out.shape[0] <= STORED.shape[0] and out.shape[1] <= STORED.shape[1]
        assert TransformSpec.model_validate(spec("transform", name, p=0.0)).build()(STORED, np.random.default_rng(0)) \
            is STORED
    assert np.array_equal(out, transform(STORED, np.random.default_rng(0)))  # a function of the generator
    copy = pickle.loads(pickle.dumps(transform))  # data-loader workers receive it pickled
    assert np.array_equal(copy(STORED, np.random.default_rng(0)), out)
    final = Pipeline([transform], 32)(STORED, np.random.default_rng(0))
    assert final.shape == (32, 32) and final.dtype == np.uint8 and final.flags.writeable


# -------------------------------------------------------------------- mixers
@pytest.mark.parametrize("name", MIXERS.names())
def test_mixer_shares_add_up_and_identical_images_stay_identical(name):
    mixer = MixingSpec.model_validate(spec("mixing", name, p=1.0)).build()
    rng = np.random.default_rng(0)
    draw = mixer.draw(4, 32, 32, rng)
    assert sum(draw.weights) == pytest.approx(1.0)
    assert all(len(source) == 4 and ((source >= 0) & (source < 4)).all() for source in draw.sources)
    images = torch.full((4, 1, 32, 32), 100, dtype=torch.uint8)
    targets = torch.tensor([[1.0, 0.0, 1.0]] * 4)
    mixed, labels = mixer(images, targets, torch.Generator().manual_seed(0))
    assert mixed.shape == images.shape
    pixels = mixed.float() if mixed.dtype == torch.uint8 else mixed * 255
    assert torch.allclose(pixels, torch.full_like(pixels, 100.0), atol=1e-3)
    assert torch.equal(labels, targets)
    again, _ = mixer(images, targets, torch.Generator().manual_seed(0))
    assert torch.equal(again, mixed)
    off = MixingSpec.model_validate(spec("mixing", name, p=0.0)).build()
    assert off(images, targets, torch.Generator().manual_seed(0))[0] is images
