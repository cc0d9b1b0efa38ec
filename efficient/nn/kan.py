"""GR-KAN: learnable group-rational activations and the KAN block that replaces a transformer MLP.

Kolmogorov-Arnold Transformer (KAT, arXiv:2409.10594) §4 (group-rational KAN, §4.2 grouping,
§4.3 variance-preserving initialisation); the op is `pallas_kernels.rational.group_rational`.
Module layout and initialisation follow the authors' code (Adamdad/kat: katransformer.py `KAN`,
rational_kat_cu: `KAT_Group`).
"""

import typing
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp
from jax.nn import initializers
from jaxtyping import Array, Float

from efficient.checks import check_float_dtypes, validates_arguments
from efficient.nn.conv import TRUNC_NORMAL
from pallas_kernels.rational import (
    PRESETS,
    VARIANCE_GAINS,
    group_rational,
    init_coefficients,
    variance_gain,
)
from pallas_kernels.rational.api import IMPLEMENTATIONS, Implementation

__all__ = [
    "FC_INITS",
    "GRKAN",
    "IMPLEMENTATIONS",
    "FcInit",
    "GroupRational",
    "check_preset",
    "fc_gain",
]

FcInit = Literal["trunc_normal", "variance_preserving"]
FC_INITS: tuple[str, ...] = typing.get_args(FcInit)

# The coefficients are a few dozen numbers per layer, read by every shard of the activation that
# follows: replicated on every mesh axis (no logical name, so no rule can split them). Naming the
# group axis would tie G to a mesh size for no memory gain.
_REPLICATED = (None, None)


@validates_arguments
def check_preset(name: str, argument: str) -> None:
    """Raise a ValueError unless `name` is an init preset of `pallas_kernels.rational`."""
    if not isinstance(name, str) or name not in PRESETS:  # a list: this, not a TypeError
        raise ValueError(f"{argument}={name!r}: one of {sorted(PRESETS)}")


@validates_arguments
def fc_gain(preset: str) -> float:
    """sigma^2 / E[F(x)^2], x ~ N(0, 1), of a preset: the variance gain of the layer after it.

    The authors' values (katransformer.py `calculate_gain`) for gelu and swish, float64
    quadrature of the kernel form (`variance_gain`) for the other presets. Note that the
    authors' gelu value (2.357) is that of the safe-PAU form, where "gelu" is a GELU; under the
    kernel form this op computes, `variance_gain("gelu")` is 3.19, so `fc_init=
    "variance_preserving"` after a "gelu" rational does not preserve variance exactly (KAT's
    models use "swish" there, whose two values agree to 0.3%).
    """
    check_preset(preset, "preset")
    if preset == "identity":
        return 1.0  # kaiming_normal_(nonlinearity="linear") in the authors' code
    return VARIANCE_GAINS[preset] if preset in VARIANCE_GAINS else variance_gain(preset)


class GroupRational(nn.Module):
    """F(x) = P(x) / Q(x) per channel group, with learnable coefficients (KAT's `KAT_Group`).

    P(x) = sum_{i=0..5} a_i x^i, Q(x) = 1 + sum_{j=1..4} |b_j| |x|^j; channel c of the last axis
    (width D) is in group c // (D / G). Parameters "numerator" [1, 6] (shared by the groups, as
    KAT) or [G, 6], and "denominator" [G, 4], initialised to a preset of
    `pallas_kernels.rational.PRESETS` in every group.

    Attributes:
      num_groups: G; it must divide D.
      preset: init preset name ("identity", "swish", "gelu_old", ...).
      shared_numerator: one numerator for all groups (KAT, FlashKAT) or one per group.
      implementation: passed to `group_rational` ("auto": Pallas on TPU, an XLA forward and
        a Pallas backward on GPU (each pass the faster one there; under a sharded jit the
        kernels run per shard), the XLA path on CPU).
      dtype: compute dtype of the input and output (the op computes in float32 inside).
      param_dtype: coefficient storage dtype (cast to float32 for the op).
    """

    num_groups: int = 8
    preset: str = "identity"
    shared_numerator: bool = True
    implementation: Implementation = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "*B D"]) -> Float[Array, "*B D"]:
        check_preset(self.preset, "preset")
        check_float_dtypes(self, ("param_dtype",))  # an int dtype would truncate the preset to 0
        numerator0, denominator0 = init_coefficients(
            self.preset, self.num_groups, shared_numerator=self.shared_numerator
        )

        def constant(value):
            def initializer(key, shape, dtype):
                del key
                return value.astype(dtype).reshape(shape)

            return nn.with_logical_partitioning(initializer, _REPLICATED)

        numerator = self.param(
            "numerator", constant(numerator0), numerator0.shape, self.param_dtype
        )  # [1 or G, 6]
        denominator = self.param(
            "denominator", constant(denominator0), denominator0.shape, self.param_dtype
        )  # [G, 4]
        if self.dtype is not None:
            x = x.astype(self.dtype)
        return group_rational(
            x,
            numerator.astype(jnp.float32),
            denominator.astype(jnp.float32),
            implementation=self.implementation,
        )


class GRKAN(nn.Module):
    """The GR-KAN block: rational -> Dense(D -> F) -> rational -> Dense(F -> D).

    KAT §4 and katransformer.py `KAN`: the first rational (on the D inputs) starts as the
    identity, the second (on the F hidden units) as the activation it replaces (swish), so at
    initialisation the block is an MLP with a swish-like activation.

    Attributes:
      mlp_dim: hidden width F.
      features: output width; None keeps the input width D.
      num_groups: G of both rationals (it must divide D and F).
      act1_init: preset of the first rational.
      act2_init: preset of the second rational.
      shared_numerator: see `GroupRational`.
      use_bias: biases on both Dense layers.
      fc_init: "trunc_normal": N(0, 0.02) truncated at +-2 sigma, what the authors' code ends up
        doing (see the model README); "variance_preserving": KAT §4.3, normal with variance
        1 / fan_in for fc1 (after the identity) and fc_gain(act2_init) / fan_in for fc2.
      implementation: passed to `group_rational`.
      dtype: compute dtype.
      param_dtype: parameter storage dtype.
    """

    mlp_dim: int
    features: int | None = None
    num_groups: int = 8
    act1_init: str = "identity"
    act2_init: str = "swish"
    shared_numerator: bool = True
    use_bias: bool = True
    fc_init: FcInit = "trunc_normal"
    implementation: Implementation = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "*B D"]) -> Float[Array, "*B _F"]:
        if self.fc_init not in FC_INITS:
            raise ValueError(f"fc_init={self.fc_init!r}: one of {FC_INITS}")
        features = x.shape[-1] if self.features is None else self.features
        if self.fc_init == "trunc_normal":
            init1 = init2 = TRUNC_NORMAL
        else:
            init1 = initializers.variance_scaling(fc_gain(self.act1_init), "fan_in", "normal")
            init2 = initializers.variance_scaling(fc_gain(self.act2_init), "fan_in", "normal")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        rational = dict(
            num_groups=self.num_groups,
            shared_numerator=self.shared_numerator,
            implementation=self.implementation,
            **dtypes,
        )
        x = GroupRational(preset=self.act1_init, name="act1", **rational)(x)
        # Megatron split as in `Mlp`: the hidden axis is the one sharded over 'tensor'.
        x = nn.Dense(
            self.mlp_dim,
            use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(init1, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("mlp",)),
            name="fc1",
            **dtypes,
        )(x)  # [*B, F]
        x = GroupRational(preset=self.act2_init, name="act2", **rational)(x)
        return nn.Dense(
            features,
            use_bias=self.use_bias,
            kernel_init=nn.with_logical_partitioning(init2, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(initializers.zeros, ("embed",)),
            name="fc2",
            **dtypes,
        )(x)  # [*B, D]
