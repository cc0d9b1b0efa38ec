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

from pallas_kernels import arguments

__all__ = ["PLATFORMS", "check_compiled", "compiler_params", "compiling_for", "current"]

PLATFORMS = ("cpu", "gpu", "tpu")
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


def current() -> str:
    """The platform being traced for: `compiling_for`'s, else `jax.default_backend()`."""
    return _TARGET.get() or jax.default_backend()


@arguments.validates_arguments
def check_compiled(implementation: str) -> None:
    """Raise a ValueError for `implementation="pallas"` (compiled kernels) when tracing for the
    CPU, which runs Pallas kernels only interpreted (Pallas' own error names neither the argument
    nor the alternatives), or for an `implementation` that is not a string."""
    if not isinstance(implementation, str):
        raise ValueError(
            f"implementation={implementation!r}: must be a string, e.g. 'xla', 'pallas' or "
            "'interpret'"
        )
    if "pallas" in implementation.split("+") and current() == "cpu":
        raise ValueError(
            f"implementation={implementation!r}: compiled Pallas kernels need a GPU or TPU and "
            "this traces for the CPU; use 'interpret' (the same kernels, interpreted), 'xla' or "
            "'auto'"
        )


def compiler_params(*, num_warps: int, num_stages: int, interpret: bool):
    """The `pallas_call` compiler parameters of the platform traced for: Triton's warps and
    pipeline stages on GPU; on TPU, a 2-D grid whose steps are independent ("parallel", so
    Mosaic may split them across cores); None when interpreting or on CPU."""
    if interpret:
        return None
    backend = current()
    if backend == "gpu":
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"))
    return None


@contextlib.contextmanager
def compiling_for(platform: str) -> Iterator[None]:
    """Trace the kernels for `platform` inside the block.

    jax's trace caches key on functions and shapes, not on this setting, so a function traced
    before for one platform would be reused for the other (e.g. a custom VJP's backward). The
    caches are cleared on entry and on exit: inside, everything is traced for `platform`; after,
    nothing traced inside is reused.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform={platform!r}: one of {', '.join(PLATFORMS)}")
    jax.clear_caches()
    token = _TARGET.set(platform)
    try:
        yield
    finally:
        _TARGET.reset(token)
        jax.clear_caches()
