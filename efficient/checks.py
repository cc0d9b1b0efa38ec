"""Checks shared across the package: each names the field or argument, its value and what is
allowed."""

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.arguments import check_choice, validates_arguments

__all__ = [
    "as_array",
    "check_choice",
    "check_field_types",
    "check_float_array",
    "check_float_dtypes",
    "check_positive",
    "check_positive_ints",
    "check_range",
    "concrete_values",
    "is_integer",
    "validates_arguments",
]


def is_integer(value: object) -> bool:
    """An int or numpy integer, not a bool (a bool is an int to Python, never a size or a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _is_literal(value: object, literal: object) -> bool:
    """`value` is the Literal's value `literal`: equal, and of its kind (True == 1 and 2.0 == 2
    in Python, but neither is the int; numpy ints are ints, as for `int` fields)."""
    if isinstance(literal, bool) or isinstance(value, bool | np.bool_):
        return (
            isinstance(literal, bool)
            and isinstance(value, bool | np.bool_)
            and bool(value == literal)
        )
    if isinstance(literal, int):
        return is_integer(value) and bool(value == literal)
    return isinstance(value, type(literal)) and bool(value == literal)


def check_field_types(owner: object) -> None:
    """Raise a ValueError unless each field of the dataclass `owner` has a value of its annotated
    scalar type: `bool` fields True or False (numpy bools too; not the string "False", which is
    truthy), `int` fields integers (numpy ints too; not bools, not 2.5), `float` fields real
    numbers other than NaN (ints too; not bools), `tuple[int, ...]` / `tuple[int, int]` tuples
    of integers, `tuple[str, ...]` tuples of non-empty strings, `Literal[...]` fields one of
    the literal's values, dataclass fields an instance of it (a nested config, not a dict); `X |
    None` fields None too. Other annotations are the owner's to check.

    Configs call it first in `__post_init__`, so a wrong type is named before any range check
    compares it.
    """
    hints = typing.get_type_hints(type(owner))
    for field in dataclasses.fields(owner):
        hint, value = hints[field.name], getattr(owner, field.name)
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
            if value is None:
                continue
            rest = [a for a in args if a is not type(None)]
            hint, args = (rest[0], typing.get_args(rest[0])) if len(rest) == 1 else (None, ())
        if hint is bool:
            ok, expected = isinstance(value, bool | np.bool_), "True or False"
        elif hint is int:
            ok, expected = is_integer(value), "an integer"
        elif hint is float:
            ok, expected = _is_real(value) and not math.isnan(value), "a number (not NaN)"
        elif typing.get_origin(hint) is tuple and args and set(args) <= {int, ...}:
            length = None if ... in args else len(args)
            ok = isinstance(value, tuple) and all(is_integer(v) for v in value)
            ok = ok and (length is None or len(value) == length)
            expected = f"a tuple of {length or 'any number of'} integers"
        elif hint == tuple[str, ...]:
            ok = isinstance(value, tuple) and all(isinstance(v, str) and v for v in value)
            expected = "a tuple of non-empty strings"
        elif typing.get_origin(hint) is typing.Literal:
            ok = any(_is_literal(value, a) for a in args)
            expected = f"one of {', '.join(map(repr, args))}"
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            ok, expected = isinstance(value, hint), f"an instance of {hint.__name__}"
        else:
            continue
        if not ok:
            raise ValueError(f"{field.name}={value!r}: expected {expected}.")


def check_float_dtypes(owner: object, names: Iterable[str] = ("dtype", "param_dtype")) -> None:
    """Raise a ValueError unless each `owner.<name>` is a floating dtype (jnp.bfloat16, "float32",
    np.float16, ...)."""
    for name in names:
        value = getattr(owner, name)
        try:  # (jnp.dtype(None) is the default float: None is refused, not read as that)
            floating = value is not None and jnp.issubdtype(jnp.dtype(value), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise ValueError(f"{name}={value!r}: expected a floating dtype.")


def check_positive_ints(owner: object, names: Iterable[str]) -> None:
    """Raise a ValueError unless each `owner.<name>` is an integer >= 1 (numpy integers too; not a
    bool or a float such as 2.0, which would fail later as a shape)."""
    for name in names:
        value = getattr(owner, name)
        if not is_integer(value) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer.")


def check_positive(owner: object, names: Iterable[str]) -> None:
    """Raise a ValueError unless each `owner.<name>` is a finite real number > 0 (NaN fails)."""
    for name in names:
        value = getattr(owner, name)
        if not (_is_real(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a finite number > 0.")


def check_float_array(name: str, x: object) -> None:
    """Raise a ValueError naming `name` unless `x` is a jax array (a tracer too) or a numpy array
    of a floating dtype."""
    if not isinstance(x, jax.Array | np.ndarray):
        raise ValueError(f"{name}: {type(x).__name__}; expected a jax or numpy array.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name}: dtype {x.dtype}; expected a floating dtype.")


def as_array(x):
    """jax and numpy arrays (and tracers) as they are; lists and scalars as numpy arrays."""
    if x is None or isinstance(x, jax.Array | np.ndarray):
        return x
    return np.asarray(x)


def concrete_values(x) -> np.ndarray | None:
    """The values of a concrete array, None for a tracer (values are unknown under jit)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_range(name: str, x: np.ndarray, lo: int, hi: int, allowed: str) -> None:
    """Raise a ValueError naming `name`, the first value outside lo..hi and its index."""
    bad = np.argwhere((x < lo) | (x > hi))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name}: {x[where]} at {list(where)} is outside {lo}..{hi} ({allowed}).")
