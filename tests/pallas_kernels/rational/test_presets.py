"""Init presets under the kernel form against their target functions; variance gains."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.rational import (
    PRESETS,
    VARIANCE_GAINS,
    group_rational,
    init_coefficients,
    variance_gain,
)

_erf = np.vectorize(math.erf)
TARGETS = {
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "leaky_relu_0.1": lambda x: np.where(x > 0, x, 0.1 * x),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_old": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
}


def test_every_preset_has_a_target():
    assert set(TARGETS) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_fit_under_kernel_form(name):
    """max |F - target| on the preset's interval (6001 points), F in f32 by group_rational."""
    preset = PRESETS[name]
    num, den = init_coefficients(name, 1)
    x = np.linspace(*preset.interval, 6001)
    got = np.asarray(group_rational(jnp.asarray(x[:, None], jnp.float32), num, den), np.float64)
    error = float(np.max(np.abs(got[:, 0] - TARGETS[name](x))))
    # Stated bound (measured in float64) plus float32 evaluation error (~1e-6 at |F| <= 20).
    assert error <= preset.max_fit_error * 1.05 + 2e-6 * max(1.0, abs(preset.interval[1]))
    if preset.fit_form == "pau":  # "gelu": fitted for the paper's form, far off under ours
        assert error > 1.0


def test_init_coefficients_layout():
    num, den = init_coefficients("swish", 8)
    assert num.shape == (1, 6) and den.shape == (8, 4) and num.dtype == jnp.float32
    num, den = init_coefficients("swish", 8, shared_numerator=False)
    assert num.shape == (8, 6) and np.all(np.asarray(num) == np.asarray(num)[:1])
    with pytest.raises(ValueError, match="name='mish': one of"):
        init_coefficients("mish", 8)
    with pytest.raises(ValueError, match="num_groups=0"):
        init_coefficients("swish", 0)


def test_init_coefficients_group_count_types():
    # As users run it: a numpy int is a count, a bool or a float is not.
    num, den = init_coefficients("swish", np.int64(4), shared_numerator=False)
    assert num.shape == (4, 6) and den.shape == (4, 4)
    for bad in (True, 4.0):
        with pytest.raises(ValueError, match=f"num_groups={bad!r}: must be a positive int"):
            init_coefficients("swish", bad)
    # A truthy string would have given the shared [1, 6] numerator.
    with pytest.raises(ValueError, match="shared_numerator='False': must be True or False"):
        init_coefficients("swish", 4, shared_numerator="False")


def test_variance_gains():
    """KAT's gains (Monte Carlo, 1e6 samples) within 1% of deterministic quadrature."""
    assert abs(variance_gain("swish") / VARIANCE_GAINS["swish"] - 1) < 0.01  # 2.8108
    assert abs(variance_gain("gelu", form="pau") / VARIANCE_GAINS["gelu"] - 1) < 0.01  # 2.3494
    assert abs(variance_gain("gelu_old") / VARIANCE_GAINS["gelu"] - 1) < 0.01  # 2.3516
    assert variance_gain("identity") == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"form='kernal': 'kernel' or 'pau'"):
        variance_gain("gelu", "kernal")  # not silently the PAU form
    with pytest.raises(ValueError, match=r"name='gleu': one of \[.*'gelu'"):
        variance_gain("gleu")


def test_unhashable_names_are_refused_by_name():
    # `[] in PRESETS` was a TypeError (unhashable type: 'list').
    with pytest.raises(ValueError, match=r"name=\[\]: one of \[.*'gelu'"):
        init_coefficients([], 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"name=\[\]: one of \[.*'gelu'"):
        variance_gain([])  # type: ignore[arg-type]
