"""Test set-up: 8 simulated CPU devices, strict promotion, jaxtyping checks, the `key` and
`no_typecheck` fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
    # Run-time shape checks for every annotated function in the package under test, except the
    # entry points marked `validates_arguments`: they name a bad argument themselves, with the
    # ValueError users see (pallas_kernels.arguments).
    from jaxtyping import install_import_hook

    install_import_hook(["efficient", "pallas_kernels"], "beartype.beartype")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def no_typecheck():
    """Without the import hook's run-time type checks, as users run the code: for a test that
    hands an internal function what its annotation would refuse."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)
