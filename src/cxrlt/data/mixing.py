"""Batch mixing on the training device: Mosaic, MixUp and CutMix with label rules.

YAML (`augment.mixing`)::

    augment:
      mixing:
        - {name: mosaic, variant: crop, label: union, p: 0.5}   # seed 003
        - {name: mixup, alpha: 4.0, label: mix, p: 0.25}        # seed 004
        - {name: cutmix, alpha: 1.0, label: mix, p: 0.25}       # Yun et al. 2019

The list is a choice: per batch at most one mixer runs, mixer j with
probability p_j, and none with probability 1 - sum(p), so the p values must
add up to at most 1 (`MixerChoice`); the example mixes half of the batches
with Mosaic, a quarter with MixUp and a quarter with CutMix.

A mixer is called as `mixer(images, targets, generator)` inside the training
step: images (B, C, H, W) uint8 (or float in [0, 1]) on the training device,
targets (B, K) float32 with NaN = missing, and a seeded CPU
`torch.Generator`; every random quantity comes from that generator, so a
batch's mixing is a function of the run seed, epoch and batch index. It
returns (images, targets); MixUp and Mosaic `resize` return float images in
[0, 1] (the model accepts uint8 and [0, 1] float), Mosaic `crop` and CutMix
keep the input dtype (their pixels are copies).

Sources. Output image i is made from image i and partner images perm[i],
where each perm is a random permutation of the batch (a permutation may map
i to itself; the image is then mixed with itself). One set of random
parameters (lambda, box, mosaic centre and crop offsets) is drawn per batch
and shared by its images, as in the reference CutMix code; the partners
differ per image.

`mosaic` (seed 003) tiles 4 images around a centre (cy, cx) drawn
uniformly from `center` times (H, W): top-left from image i, top-right,
bottom-left and bottom-right from three partner permutations. Variant
`crop` fills each quadrant with a window of the same size cut from its
source at a uniformly drawn position (the same position for the whole
batch); variant `resize` shrinks each whole source into its quadrant
(bilinear, anti-aliased). Its default centre range is [0.25, 0.75] for
`crop` and [0.5, 0.5] (a regular 2 x 2 grid, no distortion) for `resize`.

`mixup` (Zhang et al. 2018) draws lambda ~ Beta(alpha, alpha) and outputs
lambda * x_i + (1 - lambda) * x_perm[i]; seed 004 uses alpha = 4.

`cutmix` (Yun et al. 2019) draws lambda ~ Beta(alpha, alpha), a box of side
(W sqrt(1 - lambda), H sqrt(1 - lambda)) (floored to whole pixels) centred on
a uniformly drawn pixel and clipped to the image, and pastes the partner's
box into image i. Its label weights use the true pasted area, not lambda.

Label rules. Each source s of an output has a weight w_s, its share of the
output: its area fraction (Mosaic, CutMix) or lambda / 1 - lambda (MixUp);
sources with w_s = 0 (nothing of them visible) are ignored. Labels lie in
[0, 1]; a missing label (NaN) could be any value in [0, 1], and the mixed
label is given only when it does not depend on that value, otherwise it is
missing:

- `union` (seed 003): y = clip(sum_s y_s, 0, 1). With a source missing, y is
  1 when the known labels already sum to >= 1 (for 0/1 labels: some source
  is positive), else missing.
- `mix` (convex combination): y = sum_s w_s y_s, missing as soon as a
  source with w_s > 0 is missing.

Defaults follow the papers: `union` for Mosaic (seed 003), `mix` for MixUp
and CutMix (their authors; seed 003 used `union` for them too).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cxrlt.errors import ConfigError
from cxrlt.params import Positive, Probability, UnitRange
from cxrlt.registry import MIXERS

__all__ = [
    "Mixer",
    "MixerChoice",
    "Mosaic",
    "MixUp",
    "CutMix",
    "Draw",
    "build_mixer",
    "mix_labels",
]

LabelRule = Literal["union", "mix"]


# --------------------------------------------------------------------- labels
def mix_labels(targets: torch.Tensor, sources: Sequence[torch.Tensor], weights: Sequence[float],
               rule: LabelRule) -> torch.Tensor:
    """Labels of mixed images (see the module docstring for the rules and NaN handling).

    `targets` (B, K) with NaN = missing; `sources[s]` (B,) the batch index of
    source s of each output image; `weights[s]` the share of source s.
    """
    used = [(index, weight) for index, weight in zip(sources, weights) if weight > 0]
    stacked = torch.stack([targets[index] for index, _ in used])  # (S, B, K)
    missing = torch.isnan(stacked)
    values = stacked.nan_to_num(0.0)
    any_missing = missing.any(dim=0)
    if rule == "mix":
        share = torch.tensor([weight for _, weight in used], dtype=targets.dtype, device=targets.device)
        mixed = (share.view(-1, 1, 1) * values).sum(dim=0)
        undetermined = any_missing
    elif rule == "union":
        total = values.sum(dim=0)
        mixed = total.clamp(0.0, 1.0)
        undetermined = any_missing & (total < 1.0)
    else:
        raise ConfigError(f"unknown label rule {rule!r}; choose union or mix")
    return mixed.masked_fill(undetermined, float("nan"))


# -------------------------------------------------------------------- mixers
@dataclass(frozen=True)
class Draw:
    """The random parameters of one mixing of a batch.

    `sources[s]` holds, for every output image, the batch index of its source
    s (source 0 is the image itself); `weights[s]` is source s's share of the
    output; `regions[s]` is the (top, bottom, left, right) output region it
    fills (None for a source laid under the others over the whole image:
    both MixUp sources, the receiving image of CutMix);
    `offsets[s]` the (top, left) of the window cut from it (Mosaic `crop`);
    `lam` the MixUp/CutMix lambda as drawn.
    """

    sources: tuple[np.ndarray, ...]
    weights: tuple[float, ...]
    regions: tuple[tuple[int, int, int, int] | None, ...] = ()
    offsets: tuple[tuple[int, int], ...] = ()
    lam: float | None = None


class Mixer(abc.ABC):
    """Base of the registered mixers: `apply` mixes always, `__call__` with probability p."""

    p: float
    label: LabelRule

    @abc.abstractmethod
    def draw(self, batch: int, height: int, width: int, rng: np.random.Generator) -> Draw:
        """Draw the random parameters for a batch of `batch` images of height x width."""

    @abc.abstractmethod
    def mix_pixels(self, images: torch.Tensor, draw: Draw) -> torch.Tensor:
        """The mixed images for the parameters `draw`."""

    def apply(self, images: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the batch (always); labels follow `self.label`."""
        _check_batch(images, targets)
        draw = self.draw(images.shape[0], images.shape[-2], images.shape[-1], rng)
        return self.mix(images, targets, draw)

    def mix(self, images: torch.Tensor, targets: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels mixed with the given parameters."""
        sources = [torch.as_tensor(index, device=targets.device) for index in draw.sources]
        return self.mix_pixels(images, draw), mix_labels(targets, sources, draw.weights, self.label)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return MixerChoice([self])(images, targets, generator)

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _check_batch(images: torch.Tensor, targets: torch.Tensor) -> None:
    if images.dim() != 4 or targets.dim() != 2 or images.shape[0] != targets.shape[0]:
        raise ValueError(
            f"mixing expects images (B, C, H, W) and targets (B, K) with the same B; got "
            f"{tuple(images.shape)} and {tuple(targets.shape)}"
        )


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (uint8 is divided by 255, floats are taken as they are)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


@MIXERS.register("mosaic")
class Mosaic(Mixer):
    """Four images tiled around a random centre (seed 003); see the module docstring."""

    def __init__(self, variant: Literal["crop", "resize"] = "crop", label: LabelRule = "union",
                 center: UnitRange | None = None, p: Probability = 0.5):
        self.variant = variant
        self.label = label
        self.center = tuple(center) if center is not None else ((0.25, 0.75) if variant == "crop" else (0.5, 0.5))
        self.p = p

    def draw(self, batch: int, height: int, width: int, rng: np.random.Generator) -> Draw:
        cy = int(round(rng.uniform(*self.center) * height))
        cx = int(round(rng.uniform(*self.center) * width))
        sources = (np.arange(batch), rng.permutation(batch), rng.permutation(batch), rng.permutation(batch))
        regions = ((0, cy, 0, cx), (0, cy, cx, width), (cy, height, 0, cx), (cy, height, cx, width))
        offsets = []
        for top, bottom, left, right in regions:
            if self.variant == "crop":
                offsets.append((int(rng.integers(0, height - (bottom - top) + 1)),
                                int(rng.integers(0, width - (right - left) + 1))))
            else:
                offsets.append((0, 0))
        weights = tuple((bottom - top) * (right - left) / (height * width) for top, bottom, left, right in regions)
        return Draw(sources, weights, regions, tuple(offsets))

    def mix_pixels(self, images: torch.Tensor, draw: Draw) -> torch.Tensor:
        if self.variant == "crop":
            out = torch.empty_like(images)
        else:
            out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        for index, (top, bottom, left, right), (dy, dx) in zip(draw.sources, draw.regions, draw.offsets):
            h, w = bottom - top, right - left
            if h == 0 or w == 0:
                continue
            index = torch.as_tensor(index, device=images.device)
            if self.variant == "crop":
                # Slice before indexing so only the window is copied, not whole images.
                out[..., top:bottom, left:right] = images[..., dy:dy + h, dx:dx + w][index]
            else:
                source = _as_unit_float(images[index])
                # Float rounding of the (convex) filter weights can step just outside [0, 1].
                out[..., top:bottom, left:right] = F.interpolate(
                    source, size=(h, w), mode="bilinear", align_corners=False, antialias=True
                ).clamp_(0.0, 1.0)
        return out


@MIXERS.register("mixup")
class MixUp(Mixer):
    """lambda x_i + (1 - lambda) x_perm[i] with lambda ~ Beta(alpha, alpha)."""

    def __init__(self, alpha: Positive = 4.0, label: LabelRule = "mix", p: Probability = 0.5):
        self.alpha = alpha
        self.label = label
        self.p = p

    def draw(self, batch: int, height: int, width: int, rng: np.random.Generator) -> Draw:
        lam = float(rng.beta(self.alpha, self.alpha))
        partner = rng.permutation(batch)
        return Draw((np.arange(batch), partner), (lam, 1.0 - lam), (None, None), lam=lam)

    def mix_pixels(self, images: torch.Tensor, draw: Draw) -> torch.Tensor:
        partner = torch.as_tensor(draw.sources[1], device=images.device)
        x = _as_unit_float(images)
        return draw.weights[0] * x + draw.weights[1] * x[partner]


@MIXERS.register("cutmix")
class CutMix(Mixer):
    """The partner's box pasted into each image; box area from lambda ~ Beta(alpha, alpha)."""

    def __init__(self, alpha: Positive = 1.0, label: LabelRule = "mix", p: Probability = 0.5):
        self.alpha = alpha
        self.label = label
        self.p = p

    def draw(self, batch: int, height: int, width: int, rng: np.random.Generator) -> Draw:
        lam = float(rng.beta(self.alpha, self.alpha))
        cut = math.sqrt(1.0 - lam)
        box_h, box_w = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        top, left = cy - box_h // 2, cx - box_w // 2
        box = (max(top, 0), min(top + box_h, height), max(left, 0), min(left + box_w, width))
        pasted = (box[1] - box[0]) * (box[3] - box[2]) / (height * width)
        partner = rng.permutation(batch)
        return Draw((np.arange(batch), partner), (1.0 - pasted, pasted), (None, box), lam=lam)

    def mix_pixels(self, images: torch.Tensor, draw: Draw) -> torch.Tensor:
        top, bottom, left, right = draw.regions[1]
        partner = torch.as_tensor(draw.sources[1], device=images.device)
        out = images.clone()
        out[..., top:bottom, left:right] = images[..., top:bottom, left:right][partner]
        return out


# -------------------------------------------------------------------- choice
class MixerChoice:
    """At most one of several mixers per batch, mixer j with probability p_j.

    A uniform u is drawn per batch; the first mixer whose cumulative p
    exceeds u is applied, and with probability 1 - sum(p) the batch is left
    as it is (the same tensors are returned). So `p` of each mixer is the
    fraction of batches it mixes, and the list must have sum(p) <= 1.
    """

    def __init__(self, mixers: Sequence[Mixer]):
        self.mixers = list(mixers)
        total = sum(mixer.p for mixer in self.mixers)
        if total > 1.0 + 1e-9:
            listed = ", ".join(f"{type(m).__name__.lower()} p={m.p}" for m in self.mixers)
            raise ConfigError(
                f"augment.mixing: the probabilities p of the listed mixers add up to {total:g} ({listed}); "
                f"one mixer is chosen per batch, mixer j with probability p_j and none with 1 - sum(p), "
                f"so the p values must add up to at most 1"
            )

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        u = rng.random()
        for mixer in self.mixers:
            if u < mixer.p:
                return mixer.apply(images, targets, rng)
            u -= mixer.p
        return images, targets

    def __repr__(self) -> str:
        return f"MixerChoice({self.mixers!r})"


def build_mixer(specs: Sequence[Any]) -> MixerChoice:
    """The batch mixer of `augment.mixing`: `MixingSpec`s or `{name: ..., **params}` mappings."""
    mixers = []
    for spec in specs:
        if isinstance(spec, Mapping):
            params = {key: value for key, value in spec.items() if key != "name"}
            mixers.append(MIXERS.build(spec["name"], **params))
        else:
            mixers.append(spec.build())
    return MixerChoice(mixers)
