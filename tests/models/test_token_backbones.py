"""Vision-transformer backbones: timm's ViT family and local `transformers` encoders as patch-token maps.

Checks that the map is the encoder's own patch tokens in grid order, that
sizes off the patch grid are refused clearly, that CAM / Grad-CAM run on
the patch grid, and that a token backbone trains end to end (two stages,
TTA, saved model, class maps), with a tiny `transformers` model the test
saves itself (nothing is downloaded).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from cxrlt.config import ModelConfig, parse_config
from cxrlt.errors import ConfigError, InputError
from cxrlt.explain.cam import cam_maps, grad_cam_maps
from cxrlt.models.backbones import create_backbone
from cxrlt.models.build import build_model
from cxrlt.models.token_backbones import TokenBackbone, timm_token_backbone
from tiny_runs import tiny


def patch_tokens_in_grid_order(backbone: TokenBackbone, tokens: torch.Tensor, feature_map: torch.Tensor) -> bool:
    patches = tokens[:, backbone.num_prefix_tokens:]
    h, w = feature_map.shape[-2:]
    return all(torch.equal(feature_map[:, :, r, c], patches[:, r * w + c]) for r in range(h) for c in range(w))


@pytest.mark.parametrize(("name", "size", "grid"), [
    ("vit_tiny_patch16_224", 48, 3),
    ("eva02_tiny_patch14_224", 28, 2),
    ("vit_small_patch14_reg4_dinov2", 28, 2),  # a class token and 4 register tokens
])
def test_timm_vit_family_returns_its_patch_tokens_as_a_map(name, size, grid):
    backbone = create_backbone(name, False, 1, 0.0, size).eval()
    assert isinstance(backbone, TokenBackbone)
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        feature_map = backbone(x)
        tokens = backbone.model.forward_features(x)
    assert feature_map.shape == (2, backbone.num_features, grid, grid)
    assert tokens.shape[1] == backbone.num_prefix_tokens + grid * grid
    assert patch_tokens_in_grid_order(backbone, tokens, feature_map)
    # dynamic sizes: a larger whole number of patches (multiscale TTA, progressive resizing) works too
    patch = backbone.patch_size[0]
    with torch.no_grad():
        assert backbone(torch.randn(1, 1, size + patch, size + 2 * patch)).shape[-2:] == (grid + 1, grid + 2)


def test_sizes_off_the_patch_grid_are_refused_clearly():
    with pytest.raises(ConfigError, match=r"data.images.size: .*16 x 16 px patches.*multiple of 16; got 40 x 40 "
                                          r"\(nearest: 32 or 48\)"):
        create_backbone("vit_tiny_patch16_224", False, 1, 0.0, 40)
    backbone = create_backbone("vit_tiny_patch16_224", False, 1, 0.0, 32)
    with pytest.raises(InputError, match="multiple of 16; got 32 x 36"):
        backbone(torch.zeros(1, 1, 32, 36))
    # a model built for one size takes that size only
    fixed = timm_token_backbone(
        timm.create_model("vit_tiny_patch16_224", num_classes=0, global_pool="", in_chans=1, img_size=32), "fixed", 1)
    assert fixed.fixed_size == (32, 32)
    with pytest.raises(InputError, match="built for 32 x 32 px input and got 48 x 48"):
        fixed(torch.zeros(1, 1, 48, 48))
    with pytest.raises(ConfigError, match="not a saved transformers model"):
        create_backbone("transformers:/nonexistent/rad-dino", True, 1, 0.0, 32)


def test_cam_and_grad_cam_on_the_patch_grid():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="vit_tiny_patch16_224"), 3, image_size=48).eval()
    images = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    maps, logits = cam_maps(model, images, [0, 2])
    assert maps.shape == (2, 2, 3, 3) and torch.isfinite(maps).all()
    with torch.no_grad():
        assert torch.allclose(logits, model(images), atol=1e-5)
    # average pooling + linear: the mean of the class map over the 9 patches is the logit
    assert torch.allclose(maps.mean(dim=(2, 3)), logits[:, [0, 2]], atol=1e-5)
    # Grad-CAM of that head: gradient w_k / 9 at every patch, so the signed map is (CAM - b_k) / 9
    signed, _ = grad_cam_maps(model, images, [0, 2], relu=False)
    bias = model.head.fc.bias.detach()[[0, 2]].view(1, 2, 1, 1)
    assert torch.allclose(signed, (maps - bias) / 9, atol=1e-5)


# ------------------------------------------------------------ transformers
def save_tiny_encoder(folder, kind: str):
    """A randomly initialised 1-layer encoder saved like a hub download (RAD-DINO is a Dinov2Model)."""
    import transformers

    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
                  image_size=32, num_channels=3)
    torch.manual_seed(0)
    if kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    elif kind == "dinov2_registers":
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(**common, num_register_tokens=2))
    else:
        model = transformers.ViTModel(transformers.ViTConfig(**common), add_pooling_layer=False)
    model.save_pretrained(folder)
    return model.eval()


@pytest.mark.parametrize(("kind", "prefix"), [("dinov2", 1), ("dinov2_registers", 3), ("vit", 1)])
def test_a_local_transformers_encoder_is_a_backbone(tmp_path, kind, prefix):
    encoder = save_tiny_encoder(tmp_path / kind, kind)
    backbone = create_backbone(f"transformers:{tmp_path / kind}", True, 1, 0.0, 32).eval()
    assert (backbone.num_prefix_tokens, backbone.num_features, backbone.patch_size) == (prefix, 32, (8, 8))
    gray = torch.randn(2, 1, 40, 40)  # not the size it was saved for: position embeddings are interpolated
    with torch.no_grad():
        feature_map = backbone(gray)
        kwargs = {"interpolate_pos_encoding": True} if kind == "vit" else {}
        tokens = encoder(pixel_values=gray.expand(-1, 3, -1, -1), **kwargs).last_hidden_state
    assert feature_map.shape == (2, 32, 5, 5)
    assert patch_tokens_in_grid_order(backbone, tokens, feature_map)  # the folder's weights, gray in all 3 channels
    random = create_backbone(f"transformers:{tmp_path / kind}", False, 1, 0.0, 32)
    assert not torch.equal(next(random.model.parameters()), next(backbone.model.parameters()))


# ------------------------------------------------------------ end to end
@pytest.fixture
def no_plots(monkeypatch):
    import cxrlt.runs.finish as finish
    from cxrlt.evaluation.scoring import Scores

    monkeypatch.setattr(Scores, "write_plots", lambda *args, **kwargs: [])
    monkeypatch.setattr(finish, "plot_training_curves", lambda *args, **kwargs: None)
    monkeypatch.setattr(finish, "save_plots", lambda *args, **kwargs: [])


@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", "transformers"])
def test_token_backbone_trains_in_two_stages_with_tta_and_cam(tmp_path, backbone, no_plots, one_thread):
    from cxrlt.inference.saved_model import load_model
    from cxrlt.runs.train import train

    name = backbone
    if backbone == "transformers":
        save_tiny_encoder(tmp_path / "encoder", "dinov2")
        name = f"transformers:{tmp_path / 'encoder'}"
    raw = tiny(tmp_path / "data", epochs=1, limit_train_batches=2, limit_eval_batches=2)
    raw["model"] = {"backbone": name, "pretrained": backbone == "transformers", "pooling": "avg"}
    raw["stages"] = [{"name": "representation"},
                     {"name": "classifier", "freeze_backbone": True, "sampler": "cycle", "tau_normalise": True}]
    raw["augment"] = {"tta": ["hflip"]}
    result = train(parse_config(raw), tmp_path / "run", progress=False)
    run = result.run_dir
    assert (run / "stages" / "02-classifier" / "done.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test"
    model, card = load_model(run)
    assert card.model.backbone == name
    images = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    maps, logits = cam_maps(model, images, [0, 1])
    grid = 32 // model.backbone.patch_size[0]
    assert maps.shape == (2, 2, grid, grid) and np.isfinite(maps.numpy()).all()


def test_experts_head_refuses_a_token_backbone():
    with pytest.raises(ConfigError, match="experts head cannot split backbone 'vit_tiny_patch16_224'"):
        build_model(ModelConfig(backbone="vit_tiny_patch16_224", head="experts"), 3, image_size=32,
                    context={"class_names": ["a", "b", "c"], "train_labels": np.eye(3, dtype=np.float32)})
