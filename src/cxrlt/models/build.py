"""Assemble backbone + head into a model that takes raw uint8 images."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from torch import nn

from cxrlt.config import ModelConfig
from cxrlt.models.backbones import GRAY_MEAN, GRAY_STD, Backbone, create_backbone


class CxrModel(nn.Module):
    """uint8 (B, 1, H, W) images -> logits (B, K).

    Normalisation lives inside the model, so a saved model is complete: it
    takes pixels as stored and needs no separate preprocessing recipe.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, in_chans: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.in_chans = in_chans
        self.register_buffer("mean", torch.tensor(GRAY_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(GRAY_STD), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images -> normalised float, replicated to 3 channels if needed."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        x = (x - self.mean) / self.std
        if self.in_chans == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone feature map (B, C, h, w) of raw images."""
        return self.backbone(self.normalise(images))

    def forward(self, images: torch.Tensor, training_outputs: bool = False) -> torch.Tensor:
        """Logits (B, K), or with `training_outputs` what the head trains on.

        For an experts head that is every expert's logits (n, B, K) (see
        `Head.training_outputs`). A flag rather than a method, so that a
        `torch.compile`d model compiles the training path too.
        """
        features = self.features(images)
        return self.head.training_outputs(features) if training_outputs else self.head(features)

    def training_loss(self, criterion: nn.Module, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The head's training loss of `training_outputs` (adds the diversity term for experts)."""
        return self.head.training_loss(criterion, outputs, targets)

    def feature_modules(self) -> list[nn.Module]:
        """The feature extractor: the backbone and the backbone stages a head owns (experts' last stages)."""
        return [self.backbone, *self.head.feature_modules()]

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the feature extractor (frozen in decoupled stage 2)."""
        for module in self.feature_modules():
            yield from module.parameters()


def build_model(
    config: ModelConfig,
    num_classes: int,
    image_size: int | None = None,
    context: Mapping[str, Any] | None = None,
    pretrained: bool | None = None,
) -> CxrModel:
    """Build the model of `config` for `num_classes` outputs.

    `context` carries data-derived inputs some heads need (label statistics,
    label embeddings, class names). `pretrained=False` overrides the config
    (used when weights are loaded from a saved model right after) and skips
    `init_from`; without it, `init_from` starts the model from another
    saved model (`cxrlt.models.init_from`).
    """
    starting_from = config.init_from if pretrained is None else None
    weights = config.pretrained if pretrained is None else pretrained
    # Weights from `init_from` replace the backbone's, so fetching pretrained ones first would be wasted.
    backbone = create_backbone(config.backbone, False if starting_from else weights, config.in_chans,
                               config.drop_path_rate, image_size)
    head_context = {
        "in_features": backbone.num_features,
        "num_classes": num_classes,
        "pooling": config.pooling.build(),
        "post_pool": backbone.take_post_pool(),
        "backbone": backbone,
        **(context or {}),
    }
    head = config.head.build(**head_context)
    model = CxrModel(backbone, head, config.in_chans)
    if starting_from:
        from cxrlt.models.init_from import initialise_from

        initialise_from(model, starting_from, (context or {}).get("class_names"))
    return model
