"""Test-time augmentation: views at the right pixels, merge rules, wiring into prediction and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrlt.cli import main
from cxrlt.config import ModelConfig
from cxrlt.data.images import load_image
from cxrlt.data.transforms import eval_pipeline, resize_to, warp_affine
from cxrlt.ensemble.merge import merge_logits, merge_probabilities
from cxrlt.inference.tta import TestTimeAugmentation, parse_tta
from cxrlt.errors import ConfigError
from cxrlt.evaluation.predictions import read_predictions
from cxrlt.models.build import build_model
from cxrlt.inference.saved_model import export_model
from cxrlt.models.card import ModelCard
from cxrlt.inference.predict import predict_probabilities


def _logit(p):
    return np.log(p) - np.log1p(-p)


# ------------------------------------------------------------------ merging
def test_arithmetic_and_geometric_merge_on_hand_made_numbers():
    probs = np.array([[[0.9, 0.2, 0.1]], [[0.5, 0.8, 0.1]]])  # 2 members, 1 image, 3 classes
    # arithmetic: (0.9 + 0.5) / 2, (0.2 + 0.8) / 2, 0.1
    assert np.allclose(merge_probabilities(probs, "arithmetic"), [[0.7, 0.5, 0.1]])
    # geometric: sqrt(.9 * .5) / (sqrt(.9 * .5) + sqrt(.1 * .5)) = 3 / (3 + 1); 0.2 and 0.8 cancel to 0.5;
    # identical members give themselves back
    assert np.allclose(merge_probabilities(probs, "geometric"), [[0.75, 0.5, 0.1]], atol=1e-12)
    logits = torch.tensor(_logit(probs)).permute(1, 0, 2)  # (images, views, classes)
    assert torch.allclose(merge_logits(logits, "geometric"), torch.tensor([[0.75, 0.5, 0.1]]), atol=1e-6)
    assert torch.allclose(merge_logits(logits, "arithmetic"), torch.tensor([[0.7, 0.5, 0.1]]), atol=1e-6)


def test_geometric_merge_is_symmetric_in_presence_and_absence():
    p = np.array([[0.95], [0.6], [0.3]])
    geometric = merge_probabilities(p, "geometric")
    # merging the absence probabilities gives one minus the merged presence probability
    assert np.allclose(merge_probabilities(1 - p, "geometric"), 1 - geometric)
    # the plain geometric mean of p would be below the arithmetic one; this one is not bound to be
    assert np.exp(np.log(p).mean()) < p.mean() < geometric[0]  # 0.555 < 0.617 < 0.697


def test_geometric_merge_of_a_saturated_member_stays_finite():
    merged = merge_probabilities(np.array([[0.0], [1.0], [0.5]]), "geometric")
    assert np.isfinite(merged).all() and np.allclose(merged, 0.5)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'vflip'"):
        parse_tta("hflip,vflip")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_tta(["hflip", "hflip"])
    with pytest.raises(ConfigError, match="unknown merge 'median'"):
        merge_probabilities(np.zeros((1, 1, 1)), "median")
    assert parse_tta(" hflip , multicrop") == ("multicrop", "hflip")


# -------------------------------------------------------------------- views
def test_multicrop_windows_are_cut_at_the_right_pixels():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every pixel distinct
    tta = TestTimeAugmentation(["multicrop"], size=14)  # 0.875 * 16 = 14: no resize after the crop
    views = tta.views(image)
    assert tta.view_names() == ["crop centre", "crop top-left", "crop top-right", "crop bottom-left",
                                "crop bottom-right"]
    expected = [image[1:15, 1:15], image[0:14, 0:14], image[0:14, 2:16], image[2:16, 0:14], image[2:16, 2:16]]
    for view, window in zip(views, expected):
        assert np.array_equal(view, window)


def test_ten_crop_order_and_resize_to_the_model_input():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    tta = TestTimeAugmentation("multicrop,hflip", size=10)
    views = tta.views(image)
    assert views.shape == (10, 10, 10) and tta.view_names()[:2] == ["crop centre", "crop centre, mirrored"]
    top_left = resize_to(np.ascontiguousarray(image[0:18, 0:18]), 10)  # round(0.875 * 20) = 18
    assert np.array_equal(views[2], top_left) and np.array_equal(views[3], top_left[:, ::-1])


def test_multiscale_views_use_the_training_zoom_and_keep_the_original():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    tta = TestTimeAugmentation(["multiscale"], size=24)
    views = tta.views(image)
    assert tta.view_names() == ["zoom 0.9", "original", "zoom 1.1"]
    assert np.array_equal(views[1], image)
    assert np.array_equal(views[0], warp_affine(image, scale=0.9))
    assert np.array_equal(views[2], warp_affine(image, scale=1.1))
    assert TestTimeAugmentation(["hflip", "multicrop", "multiscale"], 16).n_views == 30


def test_views_are_cut_from_the_evaluation_centre_crop():
    image = (np.arange(400) % 256).reshape(20, 20).astype(np.uint8)  # no two 14 x 14 windows alike
    base = eval_pipeline([{"name": "center_crop", "size": 16}], 14)  # keeps image[2:18, 2:18]
    tta = TestTimeAugmentation("multicrop,hflip", 14, base=base)
    views = tta.views(image)
    # 0.875 * 16 = 14: the crops of the 16-px centre crop, at the input size without a resize
    crop = image[2:18, 2:18]
    assert np.array_equal(views[0], crop[1:15, 1:15]) and np.array_equal(views[1], crop[1:15, 1:15][:, ::-1])
    assert np.array_equal(views[2], crop[0:14, 0:14]) and np.array_equal(views[8], crop[2:16, 2:16])
    # without the base the centre view would be the stored image's own centre crop, 17.5 px wide
    assert not np.array_equal(TestTimeAugmentation("multicrop", 14).views(image)[0], views[0])
    # the un-augmented view is exactly what prediction without TTA feeds the model
    assert np.array_equal(TestTimeAugmentation("hflip", 14, base=base).views(image)[0], base(image))


# --------------------------------------------------------------- prediction
class RowEnergy(torch.nn.Module):
    """Logits from per-row sums of squared pixels: exactly invariant to a left-right flip.

    Sums of squared uint8 values are integers below 2**24, exact in float32 in any order.
    """

    def __init__(self, size: int, classes: int = 3):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(size, classes, generator=torch.Generator().manual_seed(0)) * 3e-7)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = (images.float() ** 2).sum(dim=3)[:, 0]  # (batch, height)
        return rows @ self.weight - 1.0


class LeftRight(torch.nn.Module):
    """Logits that depend on the left / right halves differently: not flip-invariant."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        half = x.shape[3] // 2
        left, right = x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([4 * left - 2 * right, right - left], dim=1)


@pytest.fixture()
def store():
    rng = np.random.default_rng(2)
    return [rng.integers(0, 256, (12, 12), dtype=np.uint8) for _ in range(5)]


@pytest.mark.parametrize("merge", ["arithmetic", "geometric"])
def test_hflip_on_a_flip_invariant_model_equals_no_tta(store, merge):
    model = RowEnergy(12)
    plain = predict_probabilities(model, store, 12, batch_size=4, progress=False, device=torch.device("cpu"))
    flipped = predict_probabilities(model, store, 12, batch_size=4, progress=False, device=torch.device("cpu"),
                                    tta=["hflip"], tta_merge=merge)
    assert plain.shape == (5, 3) and np.array_equal(plain, flipped)
    assert 0.05 < plain.min() and plain.max() < 0.95  # not saturated, so equality is not trivial


@pytest.mark.parametrize("merge", ["arithmetic", "geometric"])
def test_hflip_merges_the_image_and_its_mirror(store, merge):
    model = LeftRight()
    got = predict_probabilities(model, store, 12, batch_size=3, progress=False, device=torch.device("cpu"),
                                tta="hflip", tta_merge=merge)
    images = torch.from_numpy(np.stack(store))[:, None]
    z = torch.stack([model(images), model(images.flip(3))]).double()  # (views, images, classes)
    expected = torch.sigmoid(z.mean(0)) if merge == "geometric" else torch.sigmoid(z).mean(0)
    assert np.allclose(got, expected.numpy(), atol=1e-6)
    plain = predict_probabilities(model, store, 12, progress=False, device=torch.device("cpu"))
    assert not np.allclose(got, plain, atol=1e-3)


def test_tta_prediction_uses_the_eval_transforms(store):
    model = LeftRight()
    crop = [{"name": "center_crop", "size": 8}]
    got = predict_probabilities(model, store, 8, progress=False, device=torch.device("cpu"), tta="hflip",
                                eval_transforms=crop)
    images = torch.from_numpy(np.stack([image[2:10, 2:10] for image in store]))[:, None]
    expected = torch.sigmoid(torch.stack([model(images), model(images.flip(3))]).double()).mean(0)
    assert np.allclose(got, expected.numpy(), atol=1e-6)
    plain = predict_probabilities(model, store, 8, progress=False, device=torch.device("cpu"), eval_transforms=crop)
    assert np.allclose(plain, torch.sigmoid(model(images)).numpy(), atol=1e-6)


def test_cli_predict_with_tta(tmp_path, capsys):
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet10t")
    model = build_model(config, 2).eval()
    export_model(model, tmp_path / "run", ModelCard(model=config, classes=["Atelectasis", "Effusion"], image_size=32,
                                                    stored_size=40))
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (50, 44), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out", str(out), "--no-progress",
                 "--tta", "hflip,multicrop", "--tta-merge", "geometric"]) == 0
    assert "TTA multicrop+hflip, geometric merge" in capsys.readouterr().out
    views = torch.from_numpy(TestTimeAugmentation("hflip,multicrop", 32).views(load_image(tmp_path / "a.png", 40)))
    with torch.no_grad():
        expected = torch.sigmoid(model(views[:, None]).mean(0)).numpy()
    assert np.allclose(read_predictions(out).values[0], expected, atol=1e-5)
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "a.png"), "--out", str(out), "--no-progress",
                 "--tta", "flip"]) == 2
    assert "unknown test-time augmentation 'flip'" in capsys.readouterr().err
