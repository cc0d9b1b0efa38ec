"""Argument handling shared by the ops' public APIs."""

from collections.abc import Callable

__all__ = ["resolve_block_sizes"]


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
