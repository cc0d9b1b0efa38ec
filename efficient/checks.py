"""Checks that configurations share: each names the field, its value and what is allowed."""

import math
import numbers
from collections.abc import Iterable

__all__ = ["check_positive", "check_positive_ints"]


def check_positive_ints(owner: object, names: Iterable[str]) -> None:
    """Raise a ValueError unless each `owner.<name>` is an integer >= 1 (numpy integers too; not a
    bool or a float such as 2.0, which would fail later as a shape)."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer.")


def check_positive(owner: object, names: Iterable[str]) -> None:
    """Raise a ValueError unless each `owner.<name>` is a finite real number > 0 (NaN fails)."""
    for name in names:
        value = getattr(owner, name)
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (real and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite number > 0.")
