"""Class maps (CAM, Grad-CAM) for every head, overlays, and `cxrlt cam` end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxrlt.cli import main
from cxrlt.config import ModelConfig
from cxrlt.data.images import load_image
from cxrlt.data.transforms import resize_to
from cxrlt.errors import ConfigError, InputError
from cxrlt.explain.cam import cam_maps, class_indices, compute_maps, grad_cam_maps, normalise, upsample
from cxrlt.explain.overlay import blend, example_overlays, save_overlay
from cxrlt.models.build import CxrModel, build_model
from cxrlt.models.heads import CamUnsupported

from saved_models import COMMAND_CLASSES, command_model, write_png as _write_png
from quadrant_models import QUADRANTS, QuadrantBackbone, SquaredMeanHead, quadrant_model

pytestmark = pytest.mark.usefixtures("one_thread")

BLOCKS = {0: (8, 16), 1: (16, 48), 2: (40, 8), 3: (48, 40)}  # class -> (top, left) of a bright 8 x 8 block


def block_image(size: int = 64, background: int = 150) -> torch.Tensor:
    """uint8 (1, 1, 64, 64): gray background with one bright 8 x 8 block (cell-aligned) in each quadrant."""
    image = torch.full((size, size), background, dtype=torch.uint8)
    for top, left in BLOCKS.values():
        image[top:top + 8, left:left + 8] = 255
    return image[None, None]


def in_block(index: int, k: int, size: int = 64) -> bool:
    i, j = divmod(index, size)
    top, left = BLOCKS[k]
    return top <= i < top + 8 and left <= j < left + 8


# ------------------------------------------------------------ known answers
@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_each_class_map_peaks_on_the_bright_block_of_its_own_quadrant(method):
    model = quadrant_model()
    maps = compute_maps(model, block_image(), [0, 1, 2, 3], method=method)
    assert maps.method == method and maps.maps.shape == (1, 4, 64, 64)
    for k in range(4):
        heat = maps.maps[0, k]
        assert in_block(int(heat.argmax()), k), f"class {k} peaks outside its block"
        rows, cols = QUADRANTS[k]
        outside = torch.ones(8, 8, dtype=torch.bool)
        outside[rows, cols] = False
        # Cells of other quadrants, away from the bilinear seam: exactly the map's minimum (0 after scaling).
        coarse = F.adaptive_avg_pool2d(heat[None, None], 8)[0, 0]
        assert coarse[outside].max() < 0.2 and heat.min() == 0.0 and heat.max() == 1.0


def test_the_class_logit_follows_its_quadrant_only():
    model = quadrant_model()
    base = block_image()
    brighter = base.clone()
    brighter[..., 32:, 32:] = 255  # quadrant 3 only
    with torch.no_grad():
        delta = model(brighter) - model(base)
    assert delta[0, 3] > 0.5 and torch.allclose(delta[0, :3], torch.zeros(3))


def test_cam_is_the_weighted_feature_sum_plus_bias_for_a_linear_head():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet10t"), num_classes=3).eval()
    with torch.no_grad():
        model.head.fc.bias.copy_(torch.tensor([0.3, -0.7, 1.1]))
    x = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.features(x)  # (2, 512, 2, 2)
        w, b = model.head.fc.weight, model.head.fc.bias
        by_hand = torch.zeros(2, 3, *features.shape[-2:])
        for k in range(3):
            for c in range(features.shape[1]):
                by_hand[:, k] += w[k, c] * features[:, c]
            by_hand[:, k] += b[k]
        logits = model(x)
    maps, cam_logits = cam_maps(model, x, [2, 0])
    assert torch.allclose(maps, by_hand[:, [2, 0]], atol=1e-5)
    assert torch.allclose(cam_logits, logits, atol=1e-6)
    # average pooling: the spatial mean of each class map is the class logit
    assert torch.allclose(maps.mean(dim=(2, 3)), logits[:, [2, 0]], atol=1e-5)
    # Grad-CAM before the ReLU is (CAM - b) / (h w): alpha_c = w_kc / (h w)
    signed, _ = grad_cam_maps(model, x, [2, 0], relu=False)
    hw = features.shape[2] * features.shape[3]
    assert torch.allclose(signed, (maps - b[[2, 0], None, None]) / hw, atol=1e-6)
    relu, _ = grad_cam_maps(model, x, [2, 0])
    assert torch.equal(relu, signed.clamp_min(0))


def test_cam_uses_the_tau_normalised_classifier():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet10t"), num_classes=2).eval()
    model.head.tau.fill_(1.0)
    x = torch.randint(0, 256, (1, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.features(x)
        unit = model.head.fc.weight / model.head.fc.weight.norm(dim=1, keepdim=True)
        expected = torch.einsum("bchw,kc->bkhw", features, unit) + model.head.fc.bias[None, :, None, None]
    maps, _ = cam_maps(model, x, [0, 1])
    assert torch.allclose(maps, expected, atol=1e-5)


def test_grad_cam_of_a_nonlinear_head_matches_the_closed_form():
    model = CxrModel(QuadrantBackbone(), SquaredMeanHead(), in_chans=1).eval()
    x = block_image()
    assert not model.head.supports_cam
    with pytest.raises(CamUnsupported):
        model.head.class_maps(model.features(x))
    with torch.no_grad():
        features = model.features(x)
    means = features.mean(dim=(2, 3))
    expected = (2 * means[:, :, None, None] / 64 * features).clamp_min(0)
    maps, logits = grad_cam_maps(model, x, [0, 1, 2, 3])
    assert torch.allclose(maps, expected, atol=1e-7)
    assert torch.allclose(logits, means ** 2)
    auto = compute_maps(model, x, [1, 3])  # no CAM: auto picks Grad-CAM, and it still points at the blocks
    assert auto.method == "gradcam" and in_block(int(auto.maps[0, 0].argmax()), 1)
    assert in_block(int(auto.maps[0, 1].argmax()), 3)
    with pytest.raises(ConfigError, match="Grad-CAM"):
        compute_maps(model, x, [0], method="cam")


def test_experts_grad_cam_sums_the_experts_terms():
    """Experts without MHA, average pooling: Grad-CAM before ReLU = (mean of experts' CAMs - mean bias) / (h w)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet10t", head={"name": "experts", "experts": 3}), 4).eval()
    x = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    cam, logits = cam_maps(model, x, [0, 3])
    mean_bias = torch.stack([fc.bias for fc in model.head.classifiers]).mean(dim=0)
    signed, grad_logits = grad_cam_maps(model, x, [0, 3], relu=False)
    hw = cam.shape[2] * cam.shape[3]
    assert torch.allclose(signed, (cam - mean_bias[[0, 3], None, None]) / hw, atol=1e-6)
    assert torch.allclose(grad_logits, logits, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # explanations leave parameter gradients alone


HEADS = {
    "linear": ({"name": "linear"}, "cam"),
    "gcn": ({"name": "gcn", "embeddings": {"dim": 8}}, "cam"),
    "experts": ({"name": "experts", "experts": 2}, "cam"),
    "experts_gcn_mha": ({"name": "experts", "experts": 2, "classifier": "gcn", "embeddings": {"dim": 8},
                         "mha": "separate", "mha_heads": 4}, "gradcam"),
    "experts_joint_mha": ({"name": "experts", "experts": 2, "mha": "joint", "mha_heads": 4}, "gradcam"),
    "query": ({"name": "query", "dim": 32, "layers": 1, "heads": 4, "ffn": 64, "embeddings": {"dim": 8}},
              "gradcam"),
}
CLASSES5 = ["Atelectasis", "Cardiomegaly", "Pleural Effusion", "Edema", "Mass"]


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_gives_finite_maps_of_the_requested_classes(name):
    head, expected_method = HEADS[name]
    torch.manual_seed(0)
    labels = (np.random.default_rng(0).random((200, 5)) < 0.3).astype(np.float32)
    context = {"class_names": CLASSES5, "train_labels": labels}
    model = build_model(ModelConfig(backbone="resnet10t", head=head), 5, context=context).eval()
    x = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    maps = compute_maps(model, x, [4, 1, 2])
    assert maps.method == expected_method
    assert maps.maps.shape == (2, 3, 64, 64) and torch.isfinite(maps.maps).all()
    assert maps.maps.min() >= 0 and maps.maps.max() <= 1
    with torch.no_grad():
        assert torch.allclose(maps.probabilities, torch.sigmoid(model(x)), atol=1e-5)
    grad = compute_maps(model, x, [0], method="gradcam", normalised=False)
    assert grad.maps.shape == (2, 1, 64, 64) and torch.isfinite(grad.maps).all() and grad.maps.min() >= 0
    # the gradient reaches the final feature maps of every head (the signed map, before the ReLU, is not 0)
    signed, _ = grad_cam_maps(model, x, [0, 3], relu=False)
    assert signed.abs().amin(dim=(2, 3)).gt(0).all()
    assert torch.equal(F.interpolate(signed[:, :1].clamp_min(0), size=64, mode="bilinear"), grad.maps)
    assert not model.training


def test_compute_maps_leaves_a_training_model_in_training_mode():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet10t"), 2).train()
    compute_maps(model, torch.zeros(1, 1, 32, 32, dtype=torch.uint8), [0])
    assert model.training


# ------------------------------------------------------------------ helpers
def test_normalise_and_upsample():
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    out = normalise(maps)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))  # a constant map carries no location
    up = upsample(maps[:, :1], 4)
    # align_corners=False: pixel centres at 0.25 and 0.75 of each cell, edges clamped
    assert torch.allclose(up[0, 0, 0], torch.tensor([1.0, 1.5, 2.5, 3.0]))
    assert upsample(maps, (2, 2)) is maps


def test_class_names_in_any_spelling():
    classes = ["Atelectasis", "Effusion", "Pleural_Thickening"]
    assert class_indices(["pleural effusion", "PLEURAL-THICKENING", "atelectasis"], classes) == [1, 2, 0]
    with pytest.raises(InputError, match="no class 'Pneumonia'.*Atelectasis, Effusion"):
        class_indices(["Pneumonia"], classes)


def test_blend_weights_colour_by_the_map():
    image = np.full((2, 2), 100, np.uint8)
    heat = np.array([[0.0, 1.0], [0.5, 0.0]])
    out = blend(image, heat, colormap="gray", alpha=0.6)
    gray = 100 / 255
    # zero heat leaves the X-ray; heat h mixes in the colour map's colour with weight 0.6 h
    assert np.allclose(out[0, 0], gray) and np.allclose(out[1, 1], gray)
    assert np.allclose(out[0, 1], 0.4 * gray + 0.6 * 1.0, atol=1e-6)
    assert np.allclose(out[1, 0], 0.7 * gray + 0.3 * 0.5, atol=2e-3)  # gray colour map at 0.5 (256 levels)


def test_save_overlay_writes_a_png(tmp_path):
    image = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    heat = np.zeros((64, 64))
    heat[10:20, 30:40] = 1.0
    path = save_overlay(tmp_path / "o.png", image, heat, "test", boxes=[(30, 10, 40, 20)], threshold=0.5)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > png.height > 200


# ---------------------------------------------------------------------- CLI
CLASSES = COMMAND_CLASSES


@pytest.fixture()
def saved_model(tmp_path):
    return command_model(tmp_path / "run")


def _model_probs(model, path):
    pixels = torch.from_numpy(np.array(resize_to(load_image(path, 64), 48)))[None, None]
    with torch.no_grad():
        return torch.sigmoid(model(pixels))[0].numpy()


def test_cam_command_writes_one_png_per_image_and_class(tmp_path, saved_model, capsys):
    from dicom_files import write_dicom

    run, model = saved_model
    scans = tmp_path / "scans"
    (scans / "nested").mkdir(parents=True)
    _write_png(scans / "nested" / "a.png", 1)
    write_dicom(scans / "b.dcm", np.random.default_rng(2).integers(0, 4096, (70, 60), dtype=np.uint16),
                BitsStored=12)
    out = tmp_path / "cams"
    assert main(["cam", str(run / "model.safetensors"), str(scans), "--classes", "pleural effusion", "hernia",
                 "--out", str(out), "--no-progress"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["b_Effusion.png", "b_Hernia.png", "nested_a_Effusion.png", "nested_a_Hernia.png"]
    index = pd.read_csv(out / "maps.csv")
    assert list(index["image_id"]) == ["b.dcm", "b.dcm", "nested/a.png", "nested/a.png"]
    assert set(index["method"]) == {"cam"}
    expected = _model_probs(model, scans / "nested" / "a.png")
    assert np.allclose(index["probability"].to_numpy()[2:], expected[[1, 2]], atol=1e-5)
    assert "wrote 4 overlay(s) for 2 image(s)" in capsys.readouterr().out


def test_cam_command_defaults_to_the_top_classes(tmp_path, saved_model):
    run, model = saved_model
    _write_png(tmp_path / "x.png", 5)
    out = tmp_path / "cams"
    assert main(["cam", str(run), str(tmp_path / "x.png"), "--top-k", "2", "--method", "gradcam", "--out", str(out),
                 "--no-progress"]) == 0
    index = pd.read_csv(out / "maps.csv")
    probs = _model_probs(model, tmp_path / "x.png")
    assert list(index["class"]) == [CLASSES[k] for k in np.argsort(-probs)[:2]]
    assert set(index["method"]) == {"gradcam"} and len(list(out.glob("*.png"))) == 2


def test_cam_command_errors_are_clear_and_write_nothing(tmp_path, saved_model, capsys):
    run, _ = saved_model
    _write_png(tmp_path / "good.png", 3)
    out = tmp_path / "cams"
    assert main(["cam", str(run), str(tmp_path / "good.png"), "--classes", "Pneumonia", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no class 'Pneumonia'" in err and "Atelectasis, Effusion, Hernia" in err and not out.exists()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["cam", str(run), str(tmp_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "good.png" not in err and not out.exists()
    assert main(["cam", str(tmp_path / "nowhere"), str(tmp_path / "good.png")]) == 2
    assert "no saved model here" in capsys.readouterr().err


def test_example_overlays_for_reports(tmp_path, saved_model):
    run, model = saved_model
    from cxrlt.inference.saved_model import load_model

    loaded, card = load_model(run)
    _write_png(tmp_path / "p.png", 7)
    _write_png(tmp_path / "q.png", 8)
    paths = example_overlays(loaded, card, [tmp_path / "p.png", tmp_path / "q.png"], tmp_path / "ex")
    top = np.argsort(-_model_probs(model, tmp_path / "p.png"))[:2]
    assert [p.name for p in paths][:2] == [f"p_{CLASSES[k]}.png" for k in top]
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    named = example_overlays(loaded, card, [tmp_path / "p.png"], tmp_path / "ex2", classes=["effusion"])
    assert [p.name for p in named] == ["p_Effusion.png"]
