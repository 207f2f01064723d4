"""Vision-transformer backbones: token sequences turned into the feature map every head reads.

A ViT-family model (timm's ViT, DeiT, EVA, BEiT, DINOv2...; a `transformers`
`ViTModel` / `Dinov2Model` such as RAD-DINO) returns tokens (B, prefix + h w, D):
class / register / distillation tokens first, then one token per patch in
row-major order. `TokenBackbone` drops the prefix tokens and reshapes the
patch tokens to the map (B, D, h, w), so every head, pooling, stage, TTA
view and class activation map works unchanged: CAM and Grad-CAM are then
maps over the patch grid. Which heads pool that map and which read it as a
map: `linear` and `gcn` pool it (`model.pooling`; `avg` is the patch-token
mean, the usual ViT alternative to the class token), `query` reads the
patches as its keys, `experts` needs a CNN's last stage and refuses a
token backbone with a clear error.

The input must be a whole number of patches, and for a model built for one
size (no `dynamic_img_size` in timm) that size: anything else is refused
with the sizes that would work, not left to a shape error deep in the model.

A `transformers` encoder is named `transformers:<local folder>` (a folder
saved with `save_pretrained`; nothing is downloaded). `model.pretrained:
true` (or a path, ignored: the folder holds the weights) loads its weights,
`false` builds the same architecture with random weights from its
`config.json`. The folder is needed again to rebuild a saved model.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from cxrlt.errors import ConfigError, InputError

TRANSFORMERS_PREFIX = "transformers:"


def is_token_model(model: nn.Module) -> bool:
    """Whether a timm model returns patch tokens with prefix tokens (the ViT family) rather than a map."""
    return hasattr(model, "patch_embed") and isinstance(getattr(model, "num_prefix_tokens", None), int)


class TokenBackbone(nn.Module):
    """A token encoder returning the patch-token map (B, D, h, w).

    `encode(x)` gives the encoder's final (normalised) tokens (B, N, D);
    `num_prefix_tokens` of them come before the patches; `patch_size` is
    (ph, pw); `fixed_size` is the (H, W) a model without dynamic sizes
    accepts (None: any whole number of patches).
    """

    channels_last_output = False

    def __init__(self, model: nn.Module, name: str, num_features: int, num_prefix_tokens: int,
                 patch_size: tuple[int, int], fixed_size: tuple[int, int] | None, in_chans: int):
        super().__init__()
        self.model = model
        self.name = name
        self.num_features = int(num_features)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.fixed_size = None if fixed_size is None else (int(fixed_size[0]), int(fixed_size[1]))
        self.in_chans = int(in_chans)

    def take_post_pool(self) -> nn.Module:
        """Nothing to hand over: the encoders' final norm runs on every token, before pooling."""
        return nn.Identity()

    def check_size(self, height: int, width: int) -> None:
        """InputError unless (height, width) is a whole number of patches the model accepts."""
        ph, pw = self.patch_size
        if self.fixed_size is not None and (height, width) != self.fixed_size:
            raise InputError(
                f"backbone {self.name!r} was built for {self.fixed_size[0]} x {self.fixed_size[1]} px input and got "
                f"{height} x {width}; set data.images.size (and every stage's image_size) to {self.fixed_size[0]}, "
                "or use a timm model that takes dynamic sizes"
            )
        if height % ph or width % pw:
            raise InputError(
                f"backbone {self.name!r} cuts the image into {ph} x {pw} px patches, so the input size must be a "
                f"multiple of {ph}; got {height} x {width} (nearest: {max(ph, height // ph * ph)} or "
                f"{(height // ph + 1) * ph})"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        self.check_size(height, width)
        if x.shape[1] != self.in_chans:
            # A grayscale batch for a 3-channel encoder: the same image in every channel.
            x = x.expand(-1, self.in_chans, -1, -1)
        tokens = self.encode(x)
        grid = (height // self.patch_size[0], width // self.patch_size[1])
        patches = tokens[:, self.num_prefix_tokens:]
        if tokens.ndim != 3 or patches.shape[1] != grid[0] * grid[1]:
            raise ConfigError(
                f"backbone {self.name!r} returned tokens of shape {tuple(tokens.shape)}; expected "
                f"{self.num_prefix_tokens} prefix tokens and {grid[0]} x {grid[1]} patch tokens"
            )
        return patches.transpose(1, 2).reshape(len(x), -1, *grid)


def timm_token_backbone(model: nn.Module, name: str, in_chans: int) -> TokenBackbone:
    """Wrap a timm ViT-family model (see `is_token_model`)."""
    embed = model.patch_embed
    dynamic = bool(getattr(model, "dynamic_img_size", False))
    fixed = None if dynamic or not getattr(embed, "strict_img_size", True) else tuple(embed.img_size)
    return TokenBackbone(model, name, model.num_features, model.num_prefix_tokens, tuple(embed.patch_size), fixed,
                         in_chans)


class TransformersBackbone(TokenBackbone):
    """A `transformers` image encoder (ViTModel, Dinov2Model...): its last hidden state's patch tokens."""

    def __init__(self, model: nn.Module, name: str, num_features: int, num_prefix_tokens: int,
                 patch_size: tuple[int, int], in_chans: int):
        super().__init__(model, name, num_features, num_prefix_tokens, patch_size, None, in_chans)
        # Dinov2Model always interpolates its position embeddings; ViTModel does it when asked.
        self.interpolate = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        return self.model(pixel_values=x, **kwargs).last_hidden_state


def transformers_backbone(name: str, pretrained: object) -> TransformersBackbone:
    """Load `transformers:<folder>` (weights when `pretrained` is true, else random weights of its config)."""
    folder = Path(name[len(TRANSFORMERS_PREFIX):]).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model.backbone {name!r}: {folder} is not a saved transformers model (no config.json); give a local "
            "folder written by save_pretrained (e.g. a RAD-DINO download), nothing is fetched from the hub"
        )
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        model = (AutoModel.from_pretrained(folder, local_files_only=True) if pretrained
                 else AutoModel.from_config(config))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model.backbone {name!r}: cannot load {folder} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    patch = getattr(config, "patch_size", None)
    hidden = getattr(config, "hidden_size", None)
    if patch is None or hidden is None or not hasattr(model, "embeddings"):
        raise ConfigError(
            f"model.backbone {name!r}: {type(model).__name__} is not a ViT-style image encoder (it needs "
            "patch_size, hidden_size and patch embeddings, like ViTModel or Dinov2Model)"
        )
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)  # CLS, then DINOv2's register tokens
    # from_pretrained returns the model in eval mode; a backbone starts in train mode like every other module.
    model.train()
    return TransformersBackbone(model, name, hidden, prefix, patch, getattr(config, "num_channels", 3))
