"""Optimisers and learning-rate schedules, chosen by name from the config.

Schedules are per-step multipliers of the base learning rate (LambdaLR
stepped every optimiser step), so warm-up and cosine decay are smooth and a
resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from cxrlt.registry import OPTIMIZERS, SCHEDULES


@OPTIMIZERS.register("adam", context=("params",))
def adam(params: Iterable, lr: float = 1e-4, weight_decay: float = 0.0,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam (thesis: lr 1e-4, weight decay 5e-4; seed 002: betas (0.9, 0.99))."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


@OPTIMIZERS.register("adamw", context=("params",))
def adamw(params: Iterable, lr: float = 5e-5, weight_decay: float = 0.01,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay (seed 004: lr 5e-5)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


@OPTIMIZERS.register("sgd", context=("params",))
def sgd(params: Iterable, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
        nesterov: bool = False) -> torch.optim.Optimizer:
    """SGD with momentum."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


@OPTIMIZERS.register("ranger", context=("params",))
def ranger(params: Iterable, lr: float = 1e-3, weight_decay: float = 0.0, betas: tuple[float, float] = (0.95, 0.999),
           eps: float = 1e-5, lookahead_k: int = 6, lookahead_alpha: float = 0.5) -> torch.optim.Optimizer:
    """"Ranger" (seed 001): RAdam wrapped in Lookahead (k steps forward, alpha back).

    Uses timm's Lookahead; the defaults are those of the original Ranger.
    timm takes the slow weights from the fast ones at the first k-th step
    (the original initialises them at step 0), so only the first cycle differs.
    """
    from timm.optim import Lookahead

    base = torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    return Lookahead(base, alpha=lookahead_alpha, k=lookahead_k)


def _warmup(step: int, warmup_steps: int) -> float:
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


@SCHEDULES.register("constant", context=("steps_per_epoch", "total_steps"))
def constant(steps_per_epoch: int, total_steps: int, warmup_epochs: float = 0.0) -> Callable[[int], float]:
    """Constant learning rate after an optional linear warm-up."""
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda step: _warmup(step, warmup)


@SCHEDULES.register("step", context=("steps_per_epoch", "total_steps"))
def step(steps_per_epoch: int, total_steps: int, step_size: int = 10, gamma: float = 0.1,
         warmup_epochs: float = 0.0) -> Callable[[int], float]:
    """Multiply by `gamma` every `step_size` epochs."""
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda s: _warmup(s, warmup) * gamma ** (s // (step_size * steps_per_epoch))


@SCHEDULES.register("multistep", context=("steps_per_epoch", "total_steps"))
def multistep(steps_per_epoch: int, total_steps: int, milestones: list[int] = [10, 20], gamma: float = 0.1,
              warmup_epochs: float = 0.0) -> Callable[[int], float]:
    """Multiply by `gamma` at each milestone epoch (the thesis' two-step schedule)."""
    warmup = round(warmup_epochs * steps_per_epoch)
    marks = sorted(m * steps_per_epoch for m in milestones)
    return lambda s: _warmup(s, warmup) * gamma ** sum(s >= m for m in marks)


@SCHEDULES.register("cosine", context=("steps_per_epoch", "total_steps"))
def cosine(steps_per_epoch: int, total_steps: int, warmup_epochs: float = 0.0,
           min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to `min_lr_ratio` x the base rate."""
    warmup = round(warmup_epochs * steps_per_epoch)
    decay = max(1, total_steps - warmup)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        progress = min(1.0, (s - warmup) / decay)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
