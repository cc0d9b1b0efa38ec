"""Initial coefficients of the group-rational activation, fitted to classic activations.

KAT (arXiv 2409.10594), §4.3 "variance-preserving initialisation". Values copied verbatim from
rational_kat_cu: kat_rational/init.json (Adamdad/rational_kat_cu, the repository KAT's code
installs); gains from kat: katransformer.py `calculate_gain` (Adamdad/kat).

Each preset was fitted (scipy curve_fit on 1000 points of [lb, ub], kat_rational/fit.py) under one
of two forms, and the sources do not say which: measured here on 6001 points of [-3, 3] in float64,
relu, leaky_relu, leaky_relu_0.1, tanh and gelu_old fit under the kernel form
Q = 1 + sum |b_j| |x|^j (the form the kernels compute); "gelu" fits only under the safe-PAU form
Q = 1 + |sum b_j x^j| of fit.py (max error 0.003 there, 1.46 under the kernel form); sigmoid and
swish fit under both. `fit_form` records this; `max_fit_error` is the kernel-form error measured
(tests/pallas_kernels/rational/test_presets.py checks it). For a GELU under the kernel form use
"gelu_old" (max error 0.0041). KAT's models use "identity" then "swish", which are consistent.
"""

import dataclasses
import math
import numbers
from typing import Literal

import jax.numpy as jnp
import numpy as np

from pallas_kernels import arguments

__all__ = ["PRESETS", "VARIANCE_GAINS", "RationalPreset", "init_coefficients", "variance_gain"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RationalPreset:
    """One fitted initialisation.

    Attributes:
        numerator: a_0..a_5.
        denominator: b_1..b_4.
        interval: (lb, ub), the fit interval of init.json.
        fit_form: "kernel" if the values approximate the target under the kernel form, "pau" if
            only under the safe-PAU form of the fitting code, "both" if under either.
        max_fit_error: max |F(x) - target(x)| under the kernel form on `interval` (measured).
    """

    numerator: tuple[float, ...]
    denominator: tuple[float, ...]
    interval: tuple[float, float] = (-3.0, 3.0)
    fit_form: Literal["kernel", "pau", "both"] = "both"
    max_fit_error: float


# fmt: off
PRESETS: dict[str, RationalPreset] = {
    "identity": RationalPreset(
        numerator=(0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
        denominator=(0.0, 0.0, 0.0, 0.0),
        interval=(-20.0, 20.0), max_fit_error=0.0,
    ),
    "relu": RationalPreset(
        numerator=(0.029963801610813613, 0.6168978366891341, 2.37534759733888,
                   3.0659900472408443, 1.5246831881677423, 0.2528070864040542),
        denominator=(-1.191550121923625, 4.4080487697236626, 0.9110357113686055,
                     0.34884977946384615),
        fit_form="kernel", max_fit_error=0.030,
    ),
    "leaky_relu": RationalPreset(  # negative slope 0.01
        numerator=(0.029792778657264946, 0.6183735264987601, 2.323309062531321,
                   3.051936237265109, 1.4854203263828845, 0.2510244961111299),
        denominator=(-1.1419548357285474, 4.393159974992486, 0.8714712309957245,
                     0.34719662339598834),
        fit_form="kernel", max_fit_error=0.030,
    ),
    "leaky_relu_0.1": RationalPreset(
        numerator=(0.028001623256966722, 0.6356606448768645, 1.9230178392192485,
                   2.96752700768763, 1.1911336843997844, 0.23922607056505849),
        denominator=(-0.7802079437303349, 4.278190623059944, 0.5865922075979962,
                     0.33447021316466974),
        fit_form="kernel", max_fit_error=0.028,
    ),
    "tanh": RationalPreset(
        numerator=(-1.0804622559204184e-08, 1.0003008043819048, -2.5878199375289335e-08,
                   0.09632129918392647, 3.4775841628196104e-09, 0.0004255709234726337),
        denominator=(-0.0013027181209176277, 0.428349017422072, 1.4524304083061898e-09,
                     0.010796648111337176),
        fit_form="kernel", max_fit_error=4.1e-5,
    ),
    "sigmoid": RationalPreset(
        numerator=(0.4999992534599381, 0.25002157564685185, 0.14061924500301096,
                   0.049420492431596394, 0.00876714851885483, 0.0006442412789159799),
        denominator=(2.1694506382753683e-09, 0.28122766100417684, 1.0123620714203357e-05,
                     0.017531988049946),
        max_fit_error=1.9e-5,
    ),
    "gelu": RationalPreset(
        numerator=(-0.00153969, 0.51692871, 0.44075827, 0.0972553, -0.00884418, -0.00378675),
        denominator=(-0.14171056, -0.06481231, -0.0444695, 0.01283776),
        fit_form="pau", max_fit_error=1.46,
    ),
    "gelu_old": RationalPreset(
        numerator=(-0.0012423594497499122, 0.5080497063245629, 0.41586363182937475,
                   0.13022718688035761, 0.024355900098993424, 0.00290283948155535),
        denominator=(-0.06675015696494944, 0.17927646217001553, 0.03746682605496631,
                     1.6561610853276082e-10),
        fit_form="kernel", max_fit_error=0.0042,
    ),
    "swish": RationalPreset(
        numerator=(3.054879741161051e-07, 0.5000007853744493, 0.24999783422824703,
                   0.05326628273219478, 0.005803034571292244, 0.0002751961022402342),
        denominator=(-4.111554955950634e-06, 0.10652899335007572, -1.2690007399796238e-06,
                     0.0005502331264140556),
        max_fit_error=1.2e-6,
    ),
}
# fmt: on

# sigma^2 / E[F(x)^2] for x ~ N(0, 1) (kat: katransformer.py `calculate_gain`, computed by
# kat_rational/gain.py by Monte Carlo); the std gain of a following layer's init is the sqrt.
VARIANCE_GAINS: dict[str, float] = {"gelu": 2.3567850379928976, "swish": 2.8178205270359653}


def _check_name(name) -> None:
    if not isinstance(name, str) or name not in PRESETS:  # a list: this error, not a TypeError
        raise ValueError(f"name={name!r}: one of {sorted(PRESETS)}")


@arguments.validates_arguments
def init_coefficients(
    name: str, num_groups: int, *, shared_numerator: bool = True
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Coefficients of a preset for G groups.

    Args:
        name: A key of PRESETS.
        num_groups: G.
        shared_numerator: One numerator row for all groups ([1, 6], KAT) or one per group.

    Returns:
        numerator [1 or G, 6] and denominator [G, 4], float32 (every group the same preset).

    Raises:
        ValueError: An unknown name or G < 1.
    """
    _check_name(name)
    integral = isinstance(num_groups, numbers.Integral) and not isinstance(num_groups, bool)
    if not integral or num_groups < 1:
        raise ValueError(f"num_groups={num_groups!r}: must be a positive int")
    num_groups = int(num_groups)
    if not isinstance(shared_numerator, bool | np.bool_):
        raise ValueError(f"shared_numerator={shared_numerator!r}: must be True or False")
    preset = PRESETS[name]
    rows = 1 if shared_numerator else num_groups
    numerator = jnp.tile(jnp.asarray([preset.numerator], jnp.float32), (rows, 1))
    denominator = jnp.tile(jnp.asarray([preset.denominator], jnp.float32), (num_groups, 1))
    return numerator, denominator


@arguments.validates_arguments
def variance_gain(name: str, form: Literal["kernel", "pau"] = "kernel") -> float:
    """sigma^2 / E[F(x)^2], x ~ N(0, 1), of a preset under a form (float64 quadrature).

    Trapezoid rule on [-12, 12] (40001 points), deterministic, unlike gain.py's Monte Carlo.

    Args:
        name: A key of PRESETS.
        form: "kernel" (|b_j| |x|^j, what the kernels compute) or "pau" (|sum_j b_j x^j|).

    Raises:
        ValueError: An unknown name or form.
    """
    _check_name(name)
    if form not in ("kernel", "pau"):
        raise ValueError(f"form={form!r}: 'kernel' or 'pau'")
    preset = PRESETS[name]
    x = np.linspace(-12.0, 12.0, 40001)
    p = np.polynomial.polynomial.polyval(x, preset.numerator)
    b = np.asarray(preset.denominator)
    if form == "kernel":
        q = 1.0 + np.polynomial.polynomial.polyval(np.abs(x), np.concatenate([[0.0], np.abs(b)]))
    else:
        q = 1.0 + np.abs(np.polynomial.polynomial.polyval(x, np.concatenate([[0.0], b])))
    density = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    second_moment = np.trapezoid((p / q) ** 2 * density, x)
    return float(1.0 / second_moment)
