"""Autoregressive generation with a fixed-size KV cache: greedy, temperature and top-k sampling.

Works for any Linen model called as `model(tokens, decode=True)` that keeps its decoding state in
the 'cache' collection (the `Transformer` of this package, and models built from its blocks).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int, Key


def init_cache(model: nn.Module, batch_size: int, max_len: int) -> dict:
    """An empty decoding cache for `batch_size` sequences of up to `max_len` tokens.

    Shapes come from `jax.eval_shape` of `model.init`, so no parameters are created.
    """
    if batch_size < 1 or max_len < 1:
        raise ValueError(f"batch_size={batch_size}, max_len={max_len}: expected positive sizes.")
    tokens = jax.ShapeDtypeStruct((batch_size, max_len), jnp.int32)
    shapes = jax.eval_shape(lambda t: model.init(jax.random.key(0), t, decode=True), tokens)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes["cache"]))


def sample_logits(
    logits: Float[Array, "B V"], key: Key[Array, ""], *, temperature: float, top_k: int | None
) -> Int[Array, " B"]:
    """argmax when `temperature` is 0; else a draw from softmax(logits / temperature), restricted
    to the `top_k` most likely tokens when `top_k` is set."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        # The most negative finite value, not -inf: never drawn, and jax.debug_infs stays quiet.
        logits = jnp.where(logits < kth, jnp.finfo(logits.dtype).min, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k"))
def generate(
    model: nn.Module,
    params,
    prompt: Int[Array, "B P"],
    key: Key[Array, ""],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
) -> Int[Array, "B _N"]:
    """Continue `prompt` by `max_new_tokens` tokens, jitted end to end.

    The prompt is fed in one call (prefill) into a cache of exactly P + max_new_tokens slots,
    then one token per `lax.scan` step. Every row of the prompt has the same length P.

    Args:
      model: the Linen model (hashable: a static argument).
      params: its parameters (unboxed).
      prompt: the prompts' token ids.
      key: randomness for sampling (unused when greedy).
      max_new_tokens: tokens to add (>= 1).
      temperature: 0 is greedy decoding; > 0 samples from softmax(logits / temperature).
      top_k: sample among the k most likely tokens only; None: all.

    Returns:
      The prompt followed by the new tokens, [B, P + max_new_tokens].

    Raises:
      ValueError: for a non-positive `max_new_tokens`, a negative `temperature` or a bad `top_k`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: expected >= 1.")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: expected >= 0 (0 is greedy).")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: expected a positive integer or None.")
    B, P = prompt.shape
    sample = functools.partial(sample_logits, temperature=temperature, top_k=top_k)

    def forward(cache, tokens):
        logits, variables = model.apply(
            {"params": params, "cache": cache}, tokens, decode=True, mutable=["cache"]
        )
        return variables["cache"], logits[:, -1]  # [B, V]

    keys = jax.random.split(key, max_new_tokens)
    cache, last_logits = forward(init_cache(model, B, P + max_new_tokens), prompt)
    first = sample(last_logits, keys[0])  # [B]

    def step(carry, step_key):
        cache, token = carry
        cache, logits = forward(cache, token[:, None])
        return (cache, sample(logits, step_key)), token

    (_, last), tokens = lax.scan(step, (cache, first), keys[1:])  # tokens: [N - 1, B]
    new = jnp.concatenate([tokens.T, last[:, None]], axis=1)  # [B, N]
    return jnp.concatenate([prompt, new], axis=1)
