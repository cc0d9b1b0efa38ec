"""Argument handling shared by the ops' public APIs."""

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_jax_array",
    "check_array",
    "check_choice",
    "is_pow2",
    "next_pow2",
    "normalize_int_fields",
    "resolve_block_sizes",
    "validates_arguments",
]


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(n - 1, 0).bit_length()


def as_jax_array(value):
    """A numpy array as a jax array (after `check_array`); jax arrays, tracers and None as they
    are (the same objects: a residual that is an input stays that input)."""
    return value if value is None or isinstance(value, jax.Array) else jnp.asarray(value)


def check_array(name: str, value: object) -> None:
    """Raise a ValueError naming `name` unless `value` is a jax or numpy array: not any object
    with .shape and .dtype (a ShapeDtypeStruct failed later, unclearly), nor a numpy masked
    array (its mask would be dropped silently)."""
    if not isinstance(value, jax.Array | np.ndarray) or isinstance(value, np.ma.MaskedArray):
        raise ValueError(f"{name}: expected a jax or numpy array, got {type(value).__name__}")


def normalize_int_fields(obj: object, names: tuple[str, ...]) -> None:
    """Store each integer field of the frozen dataclass `obj` as a Python int, so numpy integers
    are accepted and the object hashes and compares like one built from ints (it is a static
    argument of jitted kernels). Anything else (floats, bools, strings) is left for the caller's
    checks to refuse by name."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            object.__setattr__(obj, name, int(value))


def check_choice(owner: str, name: str, value: object, allowed) -> None:
    """Raise a ValueError naming `owner.name` unless `value` is a string among `allowed` (a list,
    a dict or another unhashable value gives the same error, not a TypeError)."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{owner}.{name}={value!r}: must be one of {sorted(allowed)}")


def check_one_of(name: str, value: object, allowed) -> None:
    """Raise a ValueError "name=value: one of 'a', 'b', ..." unless `value` is a string among
    `allowed` (kept in its order; an unhashable value gives the same error)."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r}: one of {', '.join(map(repr, allowed))}")


def resolve_block_sizes[Sizes](
    block_sizes: object,
    cls: type[Sizes],
    default: Callable[[], Sizes],
    name: str = "block_sizes",
) -> Sizes:
    """`block_sizes` (the argument `name`) as a `cls` (each op's BlockSizes): None gives
    `default()`, a string is a spec for `cls.parse`; anything else raises a ValueError naming
    what is allowed. Checked on every implementation, so a bad tiling is caught before a run
    moves to the kernels."""
    if block_sizes is None:
        return default()
    if isinstance(block_sizes, str):
        return cls.parse(block_sizes)  # type: ignore[attr-defined]
    if not isinstance(block_sizes, cls):
        raise ValueError(
            f"{name}={block_sizes!r}: expected None, a {cls.__module__}.{cls.__name__}, or "
            f"a spec string for {cls.__name__}.parse"
        )
    return block_sizes


def validates_arguments[T](obj: T) -> T:
    """Marks a public entry point that checks its own arguments, with a ValueError that names
    the bad one and what is allowed: a function, or a dataclass (its `__init__`; a subclass
    needs its own mark). Run-time annotation checkers (jaxtyping's import hook, as this
    project's tests install it) skip it, so that a caller sees that ValueError rather than the
    checker's TypeError on the first annotation it fails; what it calls stays checked. Its own
    annotations, the return's included, are then unchecked in the tests: its checks must cover
    every argument, and tests its output.

    It sets the flag `typing.no_type_check` sets, on the function or the `__init__` alone: on
    a class, that flag would also empty `typing.get_type_hints(cls)`, which field checks and
    command lines read."""
    target = obj.__init__ if isinstance(obj, type) else obj
    target.__no_type_check__ = True  # type: ignore[attr-defined]
    return obj
