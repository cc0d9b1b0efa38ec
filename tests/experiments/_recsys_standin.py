"""A stand-in next-item model with the recommenders' interface, for experiment-wiring tests.

`model.apply(variables, items [B, T], timestamps [B, T], lengths [B], train=bool) -> scores
float32 [B, num_items + 1]`: the last item's embedding plus the mean of the history's, one
dense layer, dot products with every item embedding (tied).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from experiments.sequential_recommendation import register_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class StandInConfig:
    num_items: int = 1
    max_len: int = 1
    features: int = 16
    dropout_rate: float = 0.1


class StandIn(nn.Module):
    config: StandInConfig

    @nn.compact
    def __call__(self, items, timestamps, lengths, *, train: bool):
        del timestamps
        c = self.config
        embed = nn.Embed(c.num_items + 1, c.features)
        x = embed(items)  # [B, T, D]
        real = (items > 0).astype(jnp.float32)[..., None]  # [B, T, 1]
        mean = jnp.sum(x * real, 1) / jnp.maximum(jnp.sum(real, 1), 1.0)  # [B, D]
        last = jnp.take_along_axis(x, jnp.maximum(lengths - 1, 0)[:, None, None], 1)[:, 0]
        h = nn.Dense(c.features)(jnp.concatenate([last, mean], -1))  # [B, D]
        h = nn.Dropout(c.dropout_rate, deterministic=not train)(h)
        return embed.attend(h)  # [B, num_items + 1]


register_model(StandInConfig, StandIn)
