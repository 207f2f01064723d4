"""Class activation maps of a `CxrModel`: CAM and Grad-CAM, for every head, per class.

CAM (Zhou et al., CVPR 2016): the classifier applied at every position of
the last feature map, `head.class_maps(features)`, for heads whose
`supports_cam` is true (linear, gcn, and experts without MHA). The raw map keeps the classifier's bias, so with average
pooling and no post-pool norm its spatial mean is the class logit. The
experts head averages its experts' maps.

Grad-CAM (Selvaraju et al., ICCV 2017): for class k and a feature map A
(channels c), alpha_c = spatial mean of d logit_k / d A_c, and the map is
ReLU(sum_c alpha_c A_c). Scores are logits (before the sigmoid), as the
paper takes pre-softmax scores. The feature map is the last one before the
head's classifier: the backbone map, except for heads that own feature
stages (`Head.feature_modules`: the experts' last stages), where each
expert's own last-stage map gets its Grad-CAM with respect to the head's
output (the mean of the experts' logits) and the per-expert terms are
summed before the ReLU. That is the Grad-CAM of the head's output with
respect to all its final maps at once, and it keeps the analytic identity
below for experts too. Grad-CAM is the method of the query decoder, whose
classifier is not linear in the feature map.

Identity (tested): for a linear classifier behind average pooling with no
post-pool norm, d logit_k / d A_c = w_kc / (h w) at every position, so
Grad-CAM before the ReLU equals (CAM - b_k) / (h w): the two methods agree
up to a positive scale and the constant bias.

Maps come at the feature map's resolution; `compute_maps` upsamples them
bilinearly (`align_corners=False`: the feature grid tiles the image) to the
input size and, by default, rescales each map to [0, 1] by its own minimum
and maximum (a constant map becomes all zeros).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cxrlt.errors import ConfigError, InputError
from cxrlt.labels import canonical_key

Method = Literal["auto", "cam", "gradcam"]
METHODS: tuple[str, ...] = ("auto", "cam", "gradcam")
METHOD_NAMES = {"cam": "CAM", "gradcam": "Grad-CAM"}


@dataclass
class ClassMaps:
    """Maps of some classes for a batch of images.

    `maps` (B, n, H, W) float32, one per requested class in request order;
    `probabilities` (B, K) sigmoid of the logits for all the model's classes;
    `method` the method used ("cam" or "gradcam").
    """

    maps: torch.Tensor
    probabilities: torch.Tensor
    method: str


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    classes = [int(k) for k in classes]
    if not classes:
        raise ValueError("no class asked for: give at least one class index")
    bad = [k for k in classes if not 0 <= k < num_classes]
    if bad:
        raise ValueError(f"class indices {bad} out of range for a model with {num_classes} classes")
    return classes


def supports_cam(model: nn.Module) -> bool:
    """Whether the model's head defines CAM (a classifier linear in the feature map at every position)."""
    return bool(getattr(model.head, "supports_cam", False))


def cam_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM (B, n, h, w) at the feature map's resolution for `classes`, and the logits (B, K).

    Raises `ConfigError` for heads without a linear classifier (query
    decoder, experts with MHA; `supports_cam` is false): use
    `grad_cam_maps` for those.
    """
    if not supports_cam(model):
        raise ConfigError(
            f"CAM is not defined for the {type(model.head).__name__}: its classifier is not linear in the feature "
            "map (query decoder, experts with MHA); use Grad-CAM (method 'gradcam')"
        )
    with torch.no_grad():
        features = model.features(images.to(_device(model)))
        logits = model.head(features).float()
        maps = model.head.class_maps(features).float()
    return maps[:, _check_classes(classes, logits.shape[1])], logits


def _gradcam_layers(head: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the head's own final feature maps (experts' last stages), if any."""
    layers: list[nn.Module] = []
    for module in head.feature_modules():
        layers.extend(module if isinstance(module, nn.ModuleList) else [module])
    return layers


def grad_cam_maps(
    model: nn.Module, images: torch.Tensor, classes: Sequence[int], relu: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (B, n, h, w) at the feature map's resolution for `classes`, and the logits (B, K).

    `relu=False` returns sum_c alpha_c A_c before the ReLU (the signed map).
    The backbone runs without autograd; gradients are taken with respect to
    detached copies of the final feature maps only, so no parameter
    gradient is computed or touched. Images of a batch do not interact in
    an eval-mode model, so one backward pass per class serves the batch.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("Grad-CAM needs gradients: call it outside torch.inference_mode()")
    with torch.no_grad():
        features = model.features(images.to(_device(model)))
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    with torch.enable_grad():
        layers = _gradcam_layers(model.head)
        if layers:
            handles = [layer.register_forward_hook(capture) for layer in layers]
            try:
                logits = model.head(features)
            finally:
                for handle in handles:
                    handle.remove()
        else:
            captured.append(features.detach().requires_grad_(True))
            logits = model.head(captured[0])
        logits = logits.float()
        classes = _check_classes(classes, logits.shape[1])
        size = max((m.shape[-2:] for m in captured), key=lambda s: s[0] * s[1])
        out = []
        for k in classes:
            grads = torch.autograd.grad(logits[:, k].sum(), captured, retain_graph=True, allow_unused=True)
            total = torch.zeros(len(features), *size, device=logits.device)
            for activation, grad in zip(captured, grads):
                if grad is None:  # this map does not reach class k (cannot happen for the built-in heads)
                    continue
                weights = grad.float().mean(dim=(2, 3), keepdim=True)
                term = (weights * activation.detach().float()).sum(dim=1, keepdim=True)
                if term.shape[-2:] != size:
                    term = F.interpolate(term, size=size, mode="bilinear", align_corners=False)
                total = total + term[:, 0]
            out.append(total.clamp_min(0) if relu else total)
    return torch.stack(out, dim=1), logits.detach()


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, n, h, w) maps to `size` (align_corners=False: the feature grid tiles the image)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Rescale each (h, w) map of a (..., h, w) tensor to [0, 1] by its min and max; a constant map becomes 0."""
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.view_as(maps)


def compute_maps(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int],
    method: Method = "auto",
    size: int | tuple[int, int] | None = None,
    normalised: bool = True,
) -> ClassMaps:
    """Maps of `classes` for uint8 (B, 1, H, W) images, upsampled to the input size (or `size`).

    `method`: "cam", "gradcam", or "auto" (CAM where the head has a linear
    classifier, else Grad-CAM). `normalised`: each map rescaled to [0, 1]
    (see `normalise`); else raw values (CAM: logit units incl. bias).
    The model is put in eval mode for the call (dropout off, batch-norm
    statistics frozen) and left as it was.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown map method {method!r}; choose one of: {', '.join(METHODS)}")
    training = model.training
    model.eval()
    try:
        if method == "auto":
            method = "cam" if supports_cam(model) else "gradcam"
        if method == "cam":
            maps, logits = cam_maps(model, images, classes)
        else:
            maps, logits = grad_cam_maps(model, images, classes)
    finally:
        model.train(training)
    maps = upsample(maps, size if size is not None else tuple(images.shape[-2:]))
    if normalised:
        maps = normalise(maps)
    return ClassMaps(maps.cpu(), torch.sigmoid(logits).cpu(), method)


def class_indices(names: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Indices in the model's `classes` of class `names` given in any spelling (canonical names match).

    Raises `InputError` naming the unknown names and listing the model's classes.
    """
    keys = {canonical_key(c): i for i, c in enumerate(classes)}
    unknown = [name for name in names if canonical_key(name) not in keys]
    if unknown:
        raise InputError(f"the model has no class {', '.join(map(repr, unknown))}; its classes: {', '.join(classes)}")
    return [keys[canonical_key(name)] for name in names]
