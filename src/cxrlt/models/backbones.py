"""timm backbones as feature-map extractors, with pretrained-weight handling.

Weights come from timm's hub (when reachable), from a local file
(.safetensors or a PyTorch state dict, loaded with `weights_only=True`, so no
code in the file is ever executed), or are random with a clear warning.
Grayscale input uses `in_chans=1`: timm sums the pretrained RGB filters of the
first convolution, which equals feeding the gray image replicated 3 times.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from cxrlt.errors import ConfigError, InputError
from cxrlt.models.token_backbones import (TRANSFORMERS_PREFIX, TokenBackbone, is_token_model, timm_token_backbone,
                                          transformers_backbone)

# Grayscale normalisation: the mean of ImageNet's RGB statistics, so a gray
# image replicated to RGB and normalised by channel gives the same input.
GRAY_MEAN = 0.449
GRAY_STD = 0.226


class PretrainedWeightsWarning(UserWarning):
    """ImageNet weights were asked for but could not be had."""


class Backbone(nn.Module):
    """A timm model without its classifier, returning an NCHW feature map.

    Some timm heads normalise after pooling (ConvNeXt's LayerNorm). That norm
    is handed to our head (`take_post_pool`) so pretrained features keep their
    scale; the classifier-free timm model never runs its own head.
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model = model
        self.name = name
        self.num_features: int = model.num_features
        self.channels_last_output = getattr(model, "output_fmt", "NCHW") == "NHWC"

    def take_post_pool(self) -> nn.Module:
        """Remove and return the timm head's post-pooling norm (Identity if none)."""
        head = getattr(self.model, "head", None)
        norm = getattr(head, "norm", None) if isinstance(head, nn.Module) else None
        if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
            head.norm = nn.Identity()
            if isinstance(norm, LayerNorm2d):
                # Pooled features are (B, C): the same norm over the last dimension, same weights.
                flat = nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=norm.elementwise_affine,
                                    bias=norm.bias is not None)
                flat.load_state_dict(norm.state_dict())
                return flat
            return norm
        return nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        if features.ndim != 4:
            raise ConfigError(
                f"backbone {self.name!r} returns {features.ndim}-d features; cxrlt needs a convolutional or "
                "windowed backbone with a 2-d feature map (CNNs, ConvNeXt, Swin, EfficientNet...)"
            )
        if self.channels_last_output:
            features = features.permute(0, 3, 1, 2)
        return features


def create_backbone(
    name: str,
    pretrained: bool | str | Path = False,
    in_chans: int = 1,
    drop_path_rate: float = 0.0,
    image_size: int | None = None,
) -> Backbone | TokenBackbone:
    """Build timm model `name` as a feature extractor.

    `pretrained`: False (random init), True (timm hub; random init with a
    `PretrainedWeightsWarning` when the hub cannot be reached), or a path to a
    local weights file. A ViT-family model (patch tokens, see
    `cxrlt.models.token_backbones`) returns its patch-token map, built with
    dynamic input sizes where timm offers them; `transformers:<folder>`
    names a local `transformers` image encoder. `image_size` is checked
    against the patch grid.
    """
    if name.startswith(TRANSFORMERS_PREFIX):
        return _checked(transformers_backbone(name, pretrained), image_size)
    if name not in timm.list_models() and not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ConfigError(f"model.backbone: timm has no model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs: dict = dict(num_classes=0, global_pool="", in_chans=in_chans)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if image_size is not None and _takes_img_size(name):
        kwargs["img_size"] = image_size
    if _takes_img_size(name):
        # ViT-family models take any whole number of patches (TTA sizes, progressive resizing) when built so.
        kwargs["dynamic_img_size"] = True
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        return _wrap(_from_local_file(name, Path(pretrained), kwargs), name, in_chans, image_size)
    if pretrained:
        try:
            return _wrap(_create(name, kwargs, pretrained=True), name, in_chans, image_size)
        except ConfigError:
            raise
        except Exception as exc:  # any hub/network failure: fall back, loudly
            warnings.warn(
                f"could not load ImageNet weights for {name!r} from the hub ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); training from RANDOM initialisation. "
                "Set model.pretrained to a local weights file to avoid this.",
                PretrainedWeightsWarning,
                stacklevel=2,
            )
    return _wrap(_create(name, kwargs), name, in_chans, image_size)


def _create(name: str, kwargs: dict, pretrained: bool = False, **extra: object) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs, **extra)
    except (TypeError, AssertionError):
        if "dynamic_img_size" not in kwargs:
            raise
        # A model of the family without dynamic sizes: built for its one size (checked on every batch).
        fixed = {key: value for key, value in kwargs.items() if key != "dynamic_img_size"}
        return timm.create_model(name, pretrained=pretrained, **fixed, **extra)


def _wrap(model: nn.Module, name: str, in_chans: int, image_size: int | None) -> Backbone | TokenBackbone:
    if is_token_model(model):
        return _checked(timm_token_backbone(model, name, in_chans), image_size)
    return Backbone(model, name)


def _checked(backbone: TokenBackbone, image_size: int | None) -> TokenBackbone:
    """Refuse, as a configuration error, an input size the token backbone cannot take."""
    if image_size is not None:
        try:
            backbone.check_size(image_size, image_size)
        except InputError as exc:
            raise ConfigError(f"data.images.size: {exc}") from None
    return backbone


def _takes_img_size(name: str) -> bool:
    # Window/patch models (Swin) fix their input size at construction.
    return name.startswith(("swin", "vit", "deit", "beit", "eva"))


def _from_local_file(name: str, path: Path, kwargs: dict) -> nn.Module:
    """timm model `name` with the weights of a local file: timm's own, torchvision's or TorchXRayVision's.

    TorchXRayVision's DenseNet-121 and ResNet-50 use torchvision's layer
    names, which timm's loaders map (their 1-channel first convolution
    fits `in_chans: 1` as is); a state dict saved from a TorchXRayVision
    ResNet module has a `model.` prefix, removed here, and its `op_threshs`
    (calibration of its own classifier) is dropped with the classifier.
    """
    if not path.is_file():
        raise ConfigError(f"model.pretrained: weights file {path} not found")
    state = read_state_dict(path)
    try:
        return _create(name, kwargs, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state))
    except Exception as exc:
        random = _create(name, kwargs)
        expected = set(random.state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected - _classifier_keys(random, state))
        if missing or unexpected:
            raise ConfigError(
                f"model.pretrained: {path} fits no {name!r} backbone: {len(missing)} of its keys are not in the "
                f"file (e.g. {', '.join(missing[:4]) or '-'}) and {len(unexpected)} keys of the file fit nothing "
                f"(e.g. {', '.join(unexpected[:4]) or '-'}). Expected timm, torchvision or TorchXRayVision "
                f"weights of {name}."
            ) from None
        raise ConfigError(
            f"model.pretrained: cannot load {path} into {name!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or a PyTorch state dict, keys normalised (no code is ever unpickled)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"model.pretrained: cannot read {path} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Expected a .safetensors file or a PyTorch "
            "state dict of plain tensors (files that need code to unpickle are refused)."
        ) from None
    for key in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.pretrained: {path} is not a state dict (a mapping of names to tensors)")
    state = {k: v for k, v in state.items() if k != "op_threshs"}
    for prefix in ("module.", "model."):  # DataParallel; TorchXRayVision's ResNet wrapper
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _classifier_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> set[str]:
    """Keys of the file that belong to a classifier (timm's pretrained config names it), dropped on load."""
    names = model.pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in state if any(k.startswith(n + ".") for n in names)}
