"""What every head shares: the `Head` base class, the context heads take, and helpers.

It knows no head. Each head module registers itself in `cxrlt.registry.HEADS`
and the `cxrlt.models.heads` package imports them all.

A head maps a feature map (B, C, H, W) to logits (B, K). It owns its pooling
(so heads that do not pool, like the query decoder, fit the same interface)
and can be re-initialised for decoupled training. The toolkit supplies the
context arguments: `in_features`, `num_classes`, `pooling` (an nn.Module) and
`post_pool` (the backbone's post-pooling norm); label-aware heads also take
`class_names`, `train_labels` (None when a saved model is rebuilt: their
buffers are then filled by the saved state) and `backbone` (the experts head
takes over its last stage).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

HEAD_CONTEXT = ("in_features", "num_classes", "pooling", "post_pool")


class CamUnsupported(TypeError):
    """CAM was asked of a head whose classifier is not linear in the feature map (see `Head.supports_cam`)."""


class Head(nn.Module, abc.ABC):
    """Base of all heads.

    Training goes through `training_outputs` and `training_loss` (by
    default the logits and `criterion(logits, targets)`), so a head can
    train on more than its logits: the experts head returns every expert's
    logits and adds the RIDE diversity term.
    """

    @abc.abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) from the backbone feature map (B, C, H, W)."""

    def reset_classifier(self) -> None:
        """Re-initialise the classifier weights (decoupled stage 2)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def training_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """What `training_loss` takes: the logits (B, K) unless a head needs more."""
        return self(features)

    def training_loss(self, criterion: nn.Module, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of `training_outputs` under the classification loss `criterion`."""
        return criterion(outputs, targets)

    def feature_modules(self) -> list[nn.Module]:
        """Parts of the head that compute image features (frozen with the backbone in decoupled stage 2)."""
        return []

    @property
    def supports_cam(self) -> bool:
        """Whether `class_maps` (CAM) is defined: by default, whether the head class overrides it."""
        return type(self).class_maps is not Head.class_maps

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Per-class logit maps (B, K, h, w): the classifier applied at every position of the feature map (CAM).

        Defined (`supports_cam`) for heads whose classifier is linear in the
        pooled features; with average pooling and no post-pool norm their
        spatial mean is the logits. Other heads (query decoder) are explained
        with Grad-CAM on the feature map, of which `forward` is a
        differentiable function; for them this raises `CamUnsupported`.
        """
        raise CamUnsupported(f"{type(self).__name__} has no classifier linear in the feature map: use Grad-CAM")


def per_position(module: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Apply a (B, C) -> (B, C) module (a post-pool norm) at every position of a (B, C, h, w) map."""
    if isinstance(module, nn.Identity):
        return features
    return module(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
