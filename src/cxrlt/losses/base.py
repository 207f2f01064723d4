"""What every multi-label loss shares: options, counts, masking, smoothing, weighting, reduction.

A loss subclasses `MultiLabelLoss` and implements `_elementwise(x, y)`, the
per-element loss of logits `x` against (possibly smoothed) targets `y` in
[0, 1]. The base class does the rest identically for every loss, so that
losses compare: NaN targets (and an optional mask) are masked out, label
smoothing is applied, per-class weights and up-weighting factors multiply the
per-element terms, and the result is summed over classes and divided by the
batch size. Arithmetic runs in float32 (float64 when the logits are float64)
with autocast disabled, whatever precision the model runs in.

The options every loss takes (label smoothing, up-weighting) are declared
once, as the keyword parameters of `MultiLabelLoss.__init__`. A loss declares
only its own parameters, takes `**options` and passes them on with
`super().__init__(**options)`; the registry reads the options from the base
class into the loss's schema (`cxrlt.registry`). A loss registers itself with
`@LOSSES.register(name, context=CONTEXT)`, `CONTEXT` being the data the
toolkit supplies (class counts and names).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrlt.errors import ConfigError
from cxrlt.params import BelowOne, Count, Positive, Probability

CONTEXT = ("class_counts", "class_names")


@dataclass(frozen=True)
class ClassCounts:
    """Per-class positive and negative label counts of a training split (float64)."""

    positives: np.ndarray
    negatives: np.ndarray

    @property
    def num_classes(self) -> int:
        """Number of classes counted."""
        return len(self.positives)

    @property
    def frequency(self) -> np.ndarray:
        """Positive fraction P / (P + N) of each class (labels that are not missing)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.positives / (self.positives + self.negatives)


def as_class_counts(counts: Any, loss_name: str = "loss") -> ClassCounts:
    """Read counts from a mapping with "positives"/"negatives" or an object with those attributes.

    Raises ConfigError when either list is absent, the lengths differ, or a
    count is negative or not finite.
    """
    values = []
    for key in ("positives", "negatives"):
        if isinstance(counts, Mapping):
            value = counts.get(key)
        else:
            value = getattr(counts, key, None)
        if value is None:
            raise ConfigError(
                f"{loss_name}: class_counts has no {key!r}; pass a mapping with 'positives' and 'negatives' "
                "lists (one number per class, from the training split) or the toolkit's label statistics"
            )
        try:
            array = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError(f"{loss_name}: class_counts {key!r} must be a list of numbers, got {value!r}") from None
        if not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ConfigError(
                f"{loss_name}: class_counts {key!r} must be finite and non-negative, got {array.tolist()}"
            )
        values.append(array)
    if len(values[0]) != len(values[1]):
        raise ConfigError(
            f"{loss_name}: class_counts has {len(values[0])} positives but {len(values[1])} negatives; "
            "expected one of each per class"
        )
    return ClassCounts(values[0], values[1])


def class_labels(indices: Sequence[int] | np.ndarray, names: Sequence[str] | None) -> str:
    """Human-readable list of classes (by name when known, else by index)."""
    return ", ".join(str(names[i]) if names is not None else f"class {i}" for i in np.asarray(indices).tolist())


# ------------------------------------------------------- class weights
def effective_number_alpha(positives: Sequence[float], beta: float) -> np.ndarray:
    """a_k = (1 - beta) / (1 - beta^n_k), the inverse effective number of n_k samples (seed 001 eq. 3).

    Computed as (1 - beta) / -expm1(n_k log beta) so that beta close to 1
    loses no digits. Raises ConfigError for a class with no positive (the
    weight would be infinite) or a beta outside [0, 1).
    """
    n = np.asarray(positives, dtype=np.float64).reshape(-1)
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"effective-number weights need 0 <= beta < 1, got beta={beta}")
    empty = np.flatnonzero(~(n > 0))
    if len(empty):
        raise ConfigError(
            f"effective-number weights: class index {empty.tolist()} has no positive label in the training split "
            "(its weight would be infinite); drop such classes or use a loss that does not weight by positives"
        )
    if beta == 0.0:
        return np.ones_like(n)
    return (1.0 - beta) / -np.expm1(n * np.log(beta))


def effective_number_weights(positives: Sequence[float], beta: float, scale: float) -> np.ndarray:
    """Positive weights w+_k = s * C * a_k / sum_j a_j of seed 001 (eqs. 3-5; SPEC 1.6).

    `positives` are the training positives n_k per class, `beta` the
    effective-number parameter, `scale` the s of SPEC 1.6 (the paper writes
    1, the authors' released weights use 0.1). With `scale=1` these are the
    class-balanced weights of Cui et al. (normalised to sum C). The negative
    weights of seed 001 are 1 - w+.
    """
    alpha = effective_number_alpha(positives, beta)
    return scale * len(alpha) * alpha / alpha.sum()


def require_positives(
    loss: MultiLabelLoss, positives: np.ndarray, consequence: str = "the effective-number weight is infinite"
) -> None:
    """Refuse, naming them, classes without a training positive; `consequence` says what would break."""
    empty = np.flatnonzero(~(np.asarray(positives) > 0))
    if len(empty):
        raise ConfigError(
            f"{loss._label()}: {class_labels(empty, loss.class_names)} "
            f"{'has' if len(empty) == 1 else 'have'} no positive label in the training split, so {consequence}; "
            "drop such classes or use a loss that does not weight by positives"
        )


# ----------------------------------------------------------------- numerics
def safe_pow(base: Tensor, exponent: float) -> Tensor:
    """`base ** exponent` for base >= 0 with finite gradients at base == 0.

    `torch.pow` has an infinite derivative at 0 for exponents below 1, which
    times the zero derivative of a saturated sigmoid gives NaN; here the
    value is 0 (1 when exponent == 0, the 0**0 convention of focal losses)
    and the gradient 0 there.
    """
    if exponent == 0:
        return torch.ones_like(base)
    if exponent == 1:
        return base
    positive = base > 0
    powered = torch.where(positive, base, torch.ones_like(base)).pow(exponent)
    return torch.where(positive, powered, torch.zeros_like(base))


def log_one_minus_shifted(x: Tensor, margin: float) -> Tensor:
    """log(1 - p_m) with p_m = max(sigmoid(x) - margin, 0), exact for any finite logit."""
    if margin == 0:
        return F.logsigmoid(-x)
    # 1 - p_m = min(sigmoid(-x) + m, 1): no cancellation, and never below m > 0.
    return torch.log(torch.clamp(torch.sigmoid(-x) + margin, max=1.0))


def shifted_probability(x: Tensor, margin: float) -> Tensor:
    """p_m = max(sigmoid(x) - margin, 0), the negative-side probability with a margin."""
    p = torch.sigmoid(x)
    return p if margin == 0 else torch.clamp(p - margin, min=0.0)


def log_probabilities(x: Tensor) -> tuple[Tensor, Tensor]:
    """(log p, log(1 - p)) of logits, exact for any finite logit."""
    return F.logsigmoid(x), F.logsigmoid(-x)


def clip_log(value: Tensor, eps: float) -> Tensor:
    """log(max(q, eps)) given log q: clipping the log's argument at eps without leaving log space."""
    return torch.clamp(value, min=math.log(eps))


# --------------------------------------------------------------------- base
class MultiLabelLoss(nn.Module, abc.ABC):
    """Base of the registered losses: masking, smoothing, class weighting, reduction.

    `forward(logits, targets, mask=None)` returns the scalar
    sum over observed (image, class) entries of the per-element loss,
    divided by the batch size. `targets` may hold NaN (missing: left out);
    `mask` (bool, same shape, True = use) can leave out more entries.
    `per_element` returns the weighted, masked [batch, classes] terms for
    other reductions.

    Up-weighting (seed 004): the terms of the classes named in
    `upweight_classes` (needs `class_names`) are multiplied by
    `upweight_factor`; with `upweight_worst_k > 0`, the training loop calls
    `update_class_factors(val_ap)` after each validation and the k classes
    with the lowest validation AP are up-weighted too (until the next call).

    Deferred re-weighting (DRW, Cao et al. 2019) on every loss: with
    `drw_after = E`, the training loop calls `set_epoch(epoch)` at each epoch
    start (0-based, within the stage) and from epoch E on the terms are
    multiplied by the class-balanced weights of Cui et al.,
    w_k = C a_k / sum_j a_j with a_k = (1 - b) / (1 - b^n_k), b = `drw_beta`
    (0.9999, the authors' value), n_k the training positives; before epoch E
    no weight applies (the authors' `betas = [0, 0.9999]` schedule).
    """

    name = "loss"

    def __init__(
        self,
        *,
        label_smoothing: Probability = 0.0,
        upweight_classes: tuple[str, ...] = (),
        upweight_factor: Positive = 1.0,
        upweight_worst_k: Count = 0,
        drw_after: Count | None = None,
        drw_beta: BelowOne = 0.9999,
        class_counts: Any = None,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.upweight_factor = float(upweight_factor)
        self.upweight_worst_k = int(upweight_worst_k)
        self.counts = None if class_counts is None else as_class_counts(class_counts, self._label())
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        counted = None if self.counts is None else self.counts.num_classes
        if counted is not None and self.class_names is not None and len(self.class_names) != counted:
            raise ConfigError(
                f"{self._label()}: {len(self.class_names)} class names but class_counts for "
                f"{self.counts.num_classes} classes"
            )
        self.num_classes: int | None = (
            self.counts.num_classes if self.counts is not None
            else len(self.class_names) if self.class_names is not None else None
        )
        self._named = self._resolve_names(tuple(upweight_classes))
        if self.num_classes is not None and self.upweight_worst_k > self.num_classes:
            raise ConfigError(
                f"{self._label()}: upweight_worst_k={self.upweight_worst_k} exceeds the {self.num_classes} classes"
            )
        self._worst: list[int] = []
        self._class_weight: np.ndarray | None = None
        self._cache: dict[tuple[Any, ...], Tensor] = {}
        self.drw_after = None if drw_after is None else int(drw_after)
        self.drw_beta = float(drw_beta)
        self._drw_weight: np.ndarray | None = None
        self.drw_active = False
        if self.drw_after is not None:
            positives = self._require_counts().positives
            require_positives(self, positives, "its deferred re-weighting (drw_after) weight is infinite")
            self._drw_weight = effective_number_weights(positives, self.drw_beta, 1.0)
            self.drw_active = self.drw_after == 0

    # ---------------------------------------------------------- set-up helpers
    def _label(self) -> str:
        return f"loss {self.name!r}"

    def _require_counts(self) -> ClassCounts:
        if self.counts is None:
            raise ConfigError(
                f"{self._label()} needs the per-class positive and negative label counts of the training split: "
                "build it with class_counts={'positives': [...], 'negatives': [...]} (the training engine passes "
                "them from the training split's label statistics)"
            )
        return self.counts

    def _resolve_names(self, names: tuple[str, ...]) -> list[int]:
        if not names:
            return []
        if self.class_names is None:
            raise ConfigError(
                f"{self._label()}: upweight_classes {list(names)} needs the class names of the label space "
                "(build the loss with class_names=[...])"
            )
        lookup = {name.casefold(): i for i, name in enumerate(self.class_names)}
        unknown = [name for name in names if name.casefold() not in lookup]
        if unknown:
            raise ConfigError(
                f"{self._label()}: upweight_classes names unknown classes {unknown}; "
                f"the classes are: {', '.join(self.class_names)}"
            )
        return sorted({lookup[name.casefold()] for name in names})

    def _set_class_weight(self, weight: np.ndarray | None) -> None:
        """Per-class multiplier of the whole term (both signs), fixed at construction."""
        self._class_weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        self._cache.clear()

    def _constant(self, key: str, value: np.ndarray, like: Tensor) -> Tensor:
        """`value` as a tensor on the device and dtype of `like`, built once per device/dtype."""
        cache_key = (key, like.device, like.dtype)
        tensor = self._cache.get(cache_key)
        if tensor is None:
            tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
            self._cache[cache_key] = tensor
        return tensor

    # ----------------------------------------------------------- up-weighting
    @property
    def upweighted(self) -> list[int]:
        """Indices of the classes currently multiplied by `upweight_factor`."""
        return sorted(set(self._named) | set(self._worst))

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop at each epoch start (0-based): switches the DRW weights on at `drw_after`."""
        active = self.drw_after is not None and epoch >= self.drw_after
        if active != self.drw_active:
            self.drw_active = active
            self._cache.clear()

    def class_factors(self) -> np.ndarray | None:
        """The per-class multiplier applied to the terms (class weights x DRW x up-weighting), or None when all 1."""
        factors = None if self._class_weight is None else self._class_weight.copy()
        if self.drw_active:
            factors = self._drw_weight.copy() if factors is None else factors * self._drw_weight
        chosen = self.upweighted
        if chosen and self.upweight_factor != 1.0:
            if factors is None:
                factors = np.ones(self.num_classes or (max(chosen) + 1))
            factors[chosen] *= self.upweight_factor
        return factors

    def update_class_factors(self, val_ap: Sequence[float]) -> list[int]:
        """Up-weight the `upweight_worst_k` classes with the lowest validation AP.

        Called by the training loop after each validation with one AP per
        class (NaN for a class whose AP is undefined there; such classes are
        never picked). Replaces the previous pick; classes named in
        `upweight_classes` stay up-weighted. Returns the indices now
        up-weighted. Does nothing but return them when `upweight_worst_k` is 0.
        """
        ap = np.asarray(val_ap, dtype=np.float64).reshape(-1)
        if self.num_classes is None:
            self.num_classes = len(ap)
        if len(ap) != self.num_classes:
            raise ValueError(f"{self._label()}: got {len(ap)} validation AP values for {self.num_classes} classes")
        if self.upweight_worst_k > len(ap):
            raise ConfigError(
                f"{self._label()}: upweight_worst_k={self.upweight_worst_k} exceeds the {len(ap)} classes"
            )
        if self.upweight_worst_k:
            defined = np.flatnonzero(~np.isnan(ap))
            order = defined[np.argsort(ap[defined], kind="stable")]
            self._worst = sorted(order[: self.upweight_worst_k].tolist())
            self._cache.clear()
        return self.upweighted

    def get_extra_state(self) -> dict[str, Any]:
        """The validation-driven up-weighting pick, kept in checkpoints so a resumed run continues it."""
        return {"worst": list(self._worst)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the pick saved by `get_extra_state`."""
        self._worst = [int(i) for i in state.get("worst", [])]
        self._cache.clear()

    def _factors(self, like: Tensor) -> Tensor | None:
        key = ("factors", like.device, like.dtype)
        if key not in self._cache:
            factors = self.class_factors()
            if factors is None:
                return None
            self._cache[key] = torch.as_tensor(factors, dtype=like.dtype, device=like.device)
        return self._cache[key]

    # --------------------------------------------------------------- compute
    @abc.abstractmethod
    def _elementwise(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-element loss of logits `x` against targets `y` in [0, 1] (same shape)."""

    def per_element(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Weighted per-element losses, [batch, classes], 0 where the target is missing or masked."""
        if logits.shape != targets.shape or logits.dim() != 2:
            raise ValueError(
                f"{self._label()}: logits and targets must both be [batch, classes]; "
                f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{self._label()}: the logits have {logits.shape[1]} classes but the loss was built for "
                f"{self.num_classes}"
            )
        if mask is not None and mask.shape != logits.shape:
            raise ValueError(f"{self._label()}: mask has shape {tuple(mask.shape)}, logits {tuple(logits.shape)}")
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=logits.device.type, enabled=False):
            x = logits.to(dtype)
            t = targets.to(device=x.device, dtype=dtype)
            observed = ~torch.isnan(t)
            if mask is not None:
                observed = observed & mask.to(device=x.device, dtype=torch.bool)
            y = torch.where(observed, t, torch.zeros_like(t))
            if bool(((y < 0) | (y > 1)).any()):
                raise ValueError(
                    f"{self._label()}: targets must lie in [0, 1] or be NaN (missing); map uncertain labels "
                    "(e.g. CheXpert -1) with a label policy before the loss"
                )
            if self.label_smoothing:
                # Left-out entries stay 0: a loss that reads a whole row (distribution-balanced) must not see them.
                y = torch.where(observed, y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing, y)
            terms = self._elementwise(x, y)
            factors = self._factors(terms)
            if factors is not None:
                terms = terms * factors
            return torch.where(observed, terms, torch.zeros_like(terms))

    def forward(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Sum over classes of the per-element loss, mean over the images of the batch."""
        if logits.shape[0] == 0:
            raise ValueError(f"{self._label()}: empty batch")
        return self.per_element(logits, targets, mask).sum() / logits.shape[0]

    def extra_repr(self) -> str:
        parts = [f"label_smoothing={self.label_smoothing}"] if self.label_smoothing else []
        if self.drw_after is not None:
            parts.append(f"drw_after={self.drw_after}, drw_beta={self.drw_beta}, drw_active={self.drw_active}")
        if self.upweighted or self.upweight_worst_k:
            parts.append(f"upweight_factor={self.upweight_factor}, upweighted={self.upweighted}, "
                         f"upweight_worst_k={self.upweight_worst_k}")
        return ", ".join(parts)

