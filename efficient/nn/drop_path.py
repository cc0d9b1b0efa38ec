"""Stochastic depth ("drop path"): drop a whole residual branch per example while training.

Deep Networks with Stochastic Depth (arXiv:1603.09382 §3).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


class DropPath(nn.Module):
    """Zero the branch for a fraction `rate` of the examples, scale the rest by 1 / (1 - rate).

    Draws from the 'dropout' RNG stream when active (`deterministic=False` and `rate > 0`).

    Attributes:
      rate: probability of dropping the branch of one example.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: Float[Array, "B ..."], *, deterministic: bool) -> Float[Array, "B ..."]:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        kept = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(kept, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))
