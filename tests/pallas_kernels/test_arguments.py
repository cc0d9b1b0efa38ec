"""The argument helpers both kernels share, against brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import arguments, platform


def test_powers_of_two_by_brute_force():
    powers = {2**e for e in range(13)}
    for n in range(-3, 3000):
        assert arguments.is_pow2(n) == (n in powers), n
        assert arguments.next_pow2(n) == min(p for p in powers if p >= max(n, 1)), n


def test_check_array_names_the_argument():
    arguments.check_array("u", np.zeros(3))
    arguments.check_array("u", jnp.zeros(3))
    bad = [[1.0, 2.0], jax.ShapeDtypeStruct((3,), jnp.float32), np.ma.masked_array([1.0])]
    for value in bad:
        with pytest.raises(
            ValueError, match=f"u: expected a jax or numpy array, got {type(value).__name__}"
        ):
            arguments.check_array("u", value)


def test_check_compiled_names_the_argument():
    platform.check_compiled("interpret")
    with pytest.raises(ValueError, match="implementation=None: must be a string"):
        platform.check_compiled(None)  # type: ignore[arg-type]


def test_no_compiler_params_when_interpreting_or_on_cpu():
    assert platform.compiler_params(num_warps=4, num_stages=2, interpret=True) is None
    assert platform.current() != "cpu" or (
        platform.compiler_params(num_warps=4, num_stages=2, interpret=False) is None
    )


def test_check_one_of_names_the_argument_and_keeps_the_order():
    arguments.check_one_of("mode", "b", ("b", "a"))
    for bad in ["c", None, ["a"]]:
        with pytest.raises(ValueError, match=r"mode=.*: one of 'b', 'a'$"):
            arguments.check_one_of("mode", bad, ("b", "a"))
