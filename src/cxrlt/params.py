"""Parameter types of the registered methods' schemas, defined once for every kind.

A registered factory's annotations are its YAML schema (`cxrlt.registry`);
these are the constrained numbers and ranges they share, so that "a
probability" or "a range [low, high]" means the same, and is refused with the
same message, in a loss, a transform and a mixer. A type only one method
uses (a choice of names, a one-off bound) stays beside that method.

Ranges are written `[low, high]`; a `Spread` may also be one number x, read
by the method as the range symmetric about "no change" ([-x, x], or
[1 - x, 1 + x] for a factor).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
BelowOne = Annotated[float, Field(ge=0.0, lt=1.0)]  # a margin, an effective-number beta
Count = Annotated[int, Field(ge=0)]
Pixels = Annotated[int, Field(ge=1)]
Fill = Annotated[int, Field(ge=0, le=255)]  # a uint8 grey level


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"a range is [low, high] with low <= high, got [{value[0]}, {value[1]}]")
    return value


def _symmetric(value: float | tuple[float, float]) -> float | tuple[float, float]:
    if isinstance(value, tuple):
        return _ordered(value)
    if value < 0:
        raise ValueError(f"a single number x means the range [-x, x] and must be >= 0, got {value}")
    return value


def _positive_range(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] <= 0:
        raise ValueError(f"both ends must be > 0, got [{value[0]}, {value[1]}]")
    return _ordered(value)


def _non_negative_range(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] < 0:
        raise ValueError(f"both ends must be >= 0, got [{value[0]}, {value[1]}]")
    return _ordered(value)


def _fraction_range(value: tuple[float, float]) -> tuple[float, float]:
    if not 0 < value[0] <= value[1] <= 1:
        raise ValueError(f"expected 0 < low <= high <= 1, got [{value[0]}, {value[1]}]")
    return value


def _unit_range(value: tuple[float, float]) -> tuple[float, float]:
    if not 0.0 <= value[0] <= value[1] <= 1.0:
        raise ValueError(f"expected [low, high] with 0 <= low <= high <= 1, got [{value[0]}, {value[1]}]")
    return value


Spread = Annotated[float | tuple[float, float], AfterValidator(_symmetric)]
PositiveRange = Annotated[tuple[float, float], AfterValidator(_positive_range)]
NonNegativeRange = Annotated[tuple[float, float], AfterValidator(_non_negative_range)]
FractionRange = Annotated[tuple[float, float], AfterValidator(_fraction_range)]  # 0 < low <= high <= 1
UnitRange = Annotated[tuple[float, float], AfterValidator(_unit_range)]  # 0 <= low <= high <= 1
