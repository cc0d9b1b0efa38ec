"""Decoding past the cache: a clear error when the shapes show it, NaN when only the index does
(every language model with a decoding cache: attention, Hyena, LaCT)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.models.hyena import Hyena, HyenaConfig
from efficient.models.lact import LaCT, LaCTConfig
from efficient.models.transformer import Transformer, TransformerConfig, init_cache
from efficient.nn import decode_cache

MODELS = {
    "transformer": (Transformer, TransformerConfig.smoke(), "attention"),
    "hyena": (Hyena, HyenaConfig.smoke(), "Hyena"),
    "lact": (LaCT, LaCTConfig.smoke(), "LaCT"),
}
SLOTS = 6


@pytest.fixture(scope="module", params=sorted(MODELS))
def decoder(request):
    cls, config, layer = MODELS[request.param]
    model = cls(config)
    tokens = jax.random.randint(jax.random.key(0), (2, SLOTS + 1), 0, 256, dtype=jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(1), tokens[:, :SLOTS])["params"])

    def step(cache, chunk):
        return model.apply(
            {"params": params, "cache": cache}, chunk, decode=True, mutable=["cache"]
        )

    return model, jax.jit(step), tokens, layer


def test_past_the_cache_is_nan_not_a_clamped_write(decoder):
    """Filling the cache exactly is finite; one token more is NaN. Before: that write was
    clamped onto the last slot and the logits were those of another sequence (Hyena: exactly a
    forward of [t0, .., t4, t6])."""
    model, step, tokens, _ = decoder
    prompt, mutated = step(init_cache(model, 2, SLOTS), tokens[:, : SLOTS - 1])
    last, mutated = step(mutated["cache"], tokens[:, SLOTS - 1 : SLOTS])
    assert np.isfinite(np.asarray(prompt)).all() and np.isfinite(np.asarray(last)).all()
    past, _ = step(mutated["cache"], tokens[:, SLOTS:])
    assert np.isnan(np.asarray(past)).all()


def test_a_prompt_longer_than_the_cache_raises(decoder):
    model, step, tokens, layer = decoder
    with pytest.raises(ValueError, match=rf"{layer} .*7 new positions do not fit .* 6 slots"):
        step(init_cache(model, 2, SLOTS), tokens)


def test_write_and_poison_directly():
    cache = jnp.zeros((1, 4, 2))
    update = jnp.ones((1, 2, 2))
    written = decode_cache.write(cache, update, jnp.asarray(1), layer="x")
    np.testing.assert_array_equal(np.asarray(written[0, :, 0]), [0, 1, 1, 0])
    y = jnp.ones((3,), jnp.bfloat16)
    assert not np.isnan(np.asarray(decode_cache.poison_overflow(y, jnp.asarray(2), 2, 4))).any()
    poisoned = decode_cache.poison_overflow(y, jnp.asarray(3), 2, 4)
    assert poisoned.dtype == jnp.bfloat16 and np.isnan(np.asarray(poisoned, np.float32)).all()
