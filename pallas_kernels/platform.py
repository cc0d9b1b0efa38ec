"""The platform the kernels are traced for.

The kernels and `implementation="auto"` choose tilings, compiler parameters and code paths by
platform ("cpu", "gpu", "tpu"). That is `jax.default_backend()`, except inside
`compiling_for(platform)`, which traces for another one: how `pallas_kernels.aot` compiles the
kernels ahead of time for a TPU that this host does not have.
"""

import contextlib
import contextvars
from collections.abc import Iterator

import jax

__all__ = ["PLATFORMS", "compiling_for", "current"]

PLATFORMS = ("cpu", "gpu", "tpu")
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


def current() -> str:
    """The platform being traced for: `compiling_for`'s, else `jax.default_backend()`."""
    return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str) -> Iterator[None]:
    """Trace the kernels for `platform` inside the block (jit caches do not see this: trace
    functions that were not traced for another platform before, e.g. in a fresh process)."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform={platform!r}: one of {', '.join(PLATFORMS)}")
    token = _TARGET.set(platform)
    try:
        yield
    finally:
        _TARGET.reset(token)
