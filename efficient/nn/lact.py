"""Large-chunk test-time training (LaCT): SwiGLU fast weights updated once per chunk of tokens.

Test-Time Training Done Right (Zhang et al. 2025, arXiv:2505.23884) §3 and App. A; the update
pipeline follows the released LM code (a1600012888/LaCT, lact_llm/lact_model/ttt_operation.py).

Per head, fast weights W = (W0, W1, W2) with W0, W2 ∈ R^{dh×dk} and W1 ∈ R^{dv×dh} map a key to

    f_W(x) = W1 [SiLU(W0 x) ⊙ (W2 x)]

and are trained online on the dot-product loss L_i = -f_W(k_i)ᵀ v_i. One chunk of n tokens with
per-token, per-matrix learning rates η⁽ʲ⁾_i gives the update dW = -∇_W Σ_i η_i L_i, written out
(the point of the paper: no autodiff through the inner loop), with h_i = SiLU(W0 k_i) ⊙ W2 k_i:

    dW1 = Σ η1_i v_i h_iᵀ
    dW0 = Σ η0_i [(W1ᵀ v_i) ⊙ (W2 k_i) ⊙ SiLU'(W0 k_i)] k_iᵀ,   SiLU'(x) = σ(x)(1 + x(1 - σ(x)))
    dW2 = Σ η2_i [(W1ᵀ v_i) ⊙ SiLU(W0 k_i)] k_iᵀ

then, in the code's order: momentum M ← β̄ M + dW (β̄ the chunk mean of the per-token β_i, M₀ = 0);
optionally Muon, U = NS5(M) (Newton-Schulz orthogonalisation); W ← W + U; and each row of W
(one output unit, norm over the input axis) rescaled to its norm in the initial weights.

Causal sequences apply then update: chunk c's outputs use the weights after chunks 0..c-1, and the
last chunk (the remainder, or the last full chunk) only applies. The bidirectional variant updates
with a chunk and then applies the new weights to it.
"""

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name
from jaxtyping import Array, Float

from efficient.checks import check_float_array, is_integer, validates_arguments

__all__ = [
    "NS5_FIXED",
    "NS5_PER_STEP",
    "FastWeights",
    "chunk_gradients",
    "lact",
    "lact_flops",
    "newton_schulz",
    "swiglu_fast",
]

# Newton-Schulz coefficients (a, b, c) of X <- a X + (b A + c A^2) X, A = X Xᵀ.
# The LM code's five per-step triples (ttt_operation.py) and the paper's fixed triple (App. A, also
# lact_nvs/lact_ttt.py).
NS5_PER_STEP: tuple[tuple[float, float, float], ...] = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS5_FIXED: tuple[tuple[float, float, float], ...] = ((3.4445, -4.7750, 2.0315),) * 5

_NORM_EPS = 1e-5  # weight-norm restore, as the code
_NS_EPS = 1e-7  # Frobenius normalisation before Newton-Schulz
# The [n, dh] matmul outputs of a chunk that the backward pass keeps (see `lact`'s remat note).
_SAVED = "lact_chunk_activations"


class FastWeights(NamedTuple):
    """One head's fast weights (leading batch/head axes allowed on every field).

    Attributes:
        w0: [dh, dk], the gate projection.
        w1: [dv, dh], the output projection.
        w2: [dh, dk], the value projection.
    """

    w0: Array
    w1: Array
    w2: Array


def swiglu_fast(w: FastWeights, x: Float[Array, "n dk"]) -> Float[Array, "n dv"]:
    """f_W(x) = W1 [SiLU(W0 x) ⊙ (W2 x)] for each row of x."""
    gate = checkpoint_name(x @ w.w0.T, _SAVED)  # [n, dh]
    up = checkpoint_name(x @ w.w2.T, _SAVED)  # [n, dh]
    return (jax.nn.silu(gate) * up) @ w.w1.T


def chunk_gradients(
    w: FastWeights,
    k: Float[Array, "n dk"],
    v: Float[Array, "n dv"],
    lr: Float[Array, "n 3"],
) -> FastWeights:
    """dW = -∇_W Σ_i η_i L_i, L_i = -f_W(k_i)ᵀ v_i, written out (no autodiff).

    Args:
        w: Current fast weights.
        k: Keys of the chunk.
        v: Values of the chunk.
        lr: Per-token learning rates (η0, η1, η2) of (W0, W1, W2).

    Returns:
        The three updates, each of its weight's shape.
    """
    gate = checkpoint_name(k @ w.w0.T, _SAVED)  # [n, dh]
    up = checkpoint_name(k @ w.w2.T, _SAVED)  # [n, dh]
    sig = jax.nn.sigmoid(gate)
    silu = gate * sig
    hidden = silu * up  # h_i
    back = checkpoint_name(v @ w.w1, _SAVED)  # W1ᵀ v_i, [n, dh]
    d_gate = back * up * sig * (1.0 + gate * (1.0 - sig))
    d_up = back * silu
    return FastWeights(
        w0=(lr[:, 0:1] * d_gate).T @ k,
        w1=(lr[:, 1:2] * v).T @ hidden,
        w2=(lr[:, 2:3] * d_up).T @ k,
    )


def newton_schulz(
    g: Float[Array, "m n"],
    coefficients: Sequence[tuple[float, float, float]] = NS5_PER_STEP,
    dtype=jnp.bfloat16,
) -> Float[Array, "m n"]:
    """Approximate the orthogonal polar factor of g (Muon's NS5), returned in g's dtype.

    X = g / ‖g‖_F, transposed so that rows <= cols; then per step X <- aX + (bA + cA²)X with
    A = X Xᵀ. The code computes in bfloat16 (`dtype`); zero steps still Frobenius-normalise.
    """
    transpose = g.shape[0] > g.shape[1]
    x = (g.T if transpose else g).astype(jnp.float32)
    x = (x / (jnp.linalg.norm(x) + _NS_EPS)).astype(dtype)
    for a, b, c in coefficients:
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    x = x.T if transpose else x
    return x.astype(g.dtype)


def _row_norms(w: FastWeights) -> FastWeights:
    return jax.tree.map(lambda m: jnp.linalg.norm(m, axis=-1, keepdims=True), w)


def _restore_norms(w: FastWeights, norms: FastWeights) -> FastWeights:
    return jax.tree.map(
        lambda m, n: m / (jnp.linalg.norm(m, axis=-1, keepdims=True) + _NORM_EPS) * n, w, norms
    )


@validates_arguments  # it is the check: its own messages name a bad argument
def _check(q, k, v, lr, beta, w0: FastWeights, chunk_size: int, flags: dict) -> None:
    for name, x in {"q": q, "k": k, "v": v, "lr": lr, "momentum": beta}.items():
        if x is not None or name != "momentum":
            check_float_array(name, x)
    if not isinstance(w0, FastWeights):
        raise ValueError(f"initial: {type(w0).__name__}; expected FastWeights(w0, w1, w2).")
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{name}={value!r}: expected True or False.")
    if q.ndim != 2 or k.shape != q.shape:
        raise ValueError(f"q {q.shape} and k {k.shape}: expected equal shapes [T, dk].")
    T, dk = q.shape
    if v.ndim != 2 or v.shape[0] != T:
        raise ValueError(f"v.shape={v.shape}: expected [T={T}, dv].")
    if lr.shape != (T, 3):
        raise ValueError(f"lr.shape={lr.shape}: expected [T, 3] = {(T, 3)} (η0, η1, η2).")
    if beta is not None and beta.shape != (T,):
        raise ValueError(f"momentum.shape={beta.shape}: expected [T] = {(T,)}.")
    dh = w0.w0.shape[0]
    expected = FastWeights(w0=(dh, dk), w1=(v.shape[1], dh), w2=(dh, dk))
    for name, got, want in zip(FastWeights._fields, w0, expected, strict=True):
        if got.shape != want:
            raise ValueError(f"initial weights {name}.shape={got.shape}: expected {want}.")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: expected a positive int.")


@validates_arguments
def lact(
    q: Float[Array, "T dk"],
    k: Float[Array, "T dk"],
    v: Float[Array, "T dv"],
    lr: Float[Array, "T 3"],
    initial: FastWeights,
    *,
    chunk_size: int,
    momentum: Float[Array, " T"] | None = None,
    muon: bool = False,
    ns_coefficients: Sequence[tuple[float, float, float]] = NS5_PER_STEP,
    ns_dtype=jnp.bfloat16,
    weight_norm: bool = True,
    order: Literal["apply_then_update", "update_then_apply"] = "apply_then_update",
    unroll: int | bool = 1,
) -> Float[Array, "T dv"]:
    """One head's LaCT over one sequence: a `lax.scan` over chunks (vmap it over batch and heads).

    Args:
        q: Queries (the fast network's inputs at read time).
        k: Keys (its inputs when training).
        v: Values (its targets).
        lr: Per-token learning rates (η0, η1, η2), positive.
        initial: The fast weights before the first chunk (learned parameters of the layer).
        chunk_size: Tokens per update (2048 in the LM; a sequence of T <= chunk_size with
            apply-then-update uses the initial weights everywhere).
        momentum: Per-token momentum coefficients β_i in [0, 1] (the chunk uses their mean), or
            None for no momentum (β̄ = 0).
        muon: Orthogonalise each update with Newton-Schulz (after momentum).
        ns_coefficients: Per-step (a, b, c): `NS5_PER_STEP` (the LM code) or `NS5_FIXED` (paper).
        ns_dtype: Newton-Schulz compute dtype (bfloat16 in the code).
        weight_norm: Restore each row's norm to its initial value after every update.
        order: "apply_then_update" (causal) or "update_then_apply" (bidirectional chunks).
        unroll: `lax.scan`'s unroll over chunks (True: no loop, e.g. so that XLA's cost analysis,
            which counts a loop body once, counts every chunk).

    Returns:
        o [T, dv] in q's dtype (computed in float32, as are the fast weights).
    """
    _check(q, k, v, lr, momentum, initial, chunk_size, {"muon": muon, "weight_norm": weight_norm})
    if order not in ("apply_then_update", "update_then_apply"):
        raise ValueError(f"order={order!r}: 'apply_then_update' or 'update_then_apply'.")
    T, out_dtype = q.shape[0], q.dtype
    f32 = jnp.float32
    q, k, v, lr = (a.astype(f32) for a in (q, k, v, lr))
    beta = jnp.zeros((T,), f32) if momentum is None else momentum.astype(f32)
    initial = jax.tree.map(lambda m: m.astype(f32), initial)
    norms = _row_norms(initial)

    def update(w, m, k_c, v_c, lr_c, beta_c):
        grads = chunk_gradients(w, k_c, v_c, lr_c)
        m = jax.tree.map(lambda mi, gi: jnp.mean(beta_c) * mi + gi, m, grads)
        step = (
            jax.tree.map(lambda mi: newton_schulz(mi, ns_coefficients, ns_dtype), m) if muon else m
        )
        w = jax.tree.map(jnp.add, w, step)
        return (_restore_norms(w, norms) if weight_norm else w), m

    causal = order == "apply_then_update"
    # Causal: every chunk but the last updates, so the scan covers ceil(T / C) - 1 full chunks and
    # the rest (1..C tokens) only applies. Bidirectional: all full chunks, then the remainder.
    scanned = (math.ceil(T / chunk_size) - 1) if causal else T // chunk_size
    split = scanned * chunk_size

    def chunks(a):
        return a[:split].reshape(scanned, chunk_size, *a.shape[1:])

    def body(carry, xs):
        w, m = carry
        q_c, k_c, v_c, lr_c, beta_c = xs
        if causal:
            out = swiglu_fast(w, q_c)
            w, m = update(w, m, k_c, v_c, lr_c, beta_c)
        else:
            w, m = update(w, m, k_c, v_c, lr_c, beta_c)
            out = swiglu_fast(w, q_c)
        return (w, m), out

    # Remat of the chunk body: the backward pass keeps each chunk's carry (W, M) and the [n, dh]
    # matmul outputs, and recomputes the rest (the d x d update, momentum, norm restore). Plain
    # autodiff stacks 5 [dh, dk]-sized residuals per matrix and chunk (15 per chunk, plus 23 of
    # [n, d]); at B 16 x 2 heads, T 512, d 128, chunk 64 that memory traffic made the core's
    # forward + backward 1.37x slower on 2 CPU cores (557 vs 408 ms); the forward is unchanged.
    body = jax.checkpoint(
        body, prevent_cse=False, policy=jax.checkpoint_policies.save_only_these_names(_SAVED)
    )
    zeros = jax.tree.map(jnp.zeros_like, initial)
    (w, m), outs = lax.scan(
        body, (initial, zeros), tuple(map(chunks, (q, k, v, lr, beta))), unroll=unroll
    )
    outs = outs.reshape(split, v.shape[-1])
    if split < T:
        if not causal:  # the remainder updates, then applies
            w, _ = update(w, m, k[split:], v[split:], lr[split:], beta[split:])
        outs = jnp.concatenate([outs, swiglu_fast(w, q[split:])], axis=0)
    return outs.astype(out_dtype)


@validates_arguments
def lact_flops(
    tokens: int,
    dk: int,
    dh: int,
    dv: int,
    chunk_size: int,
    *,
    muon: bool = False,
    order: Literal["apply_then_update", "update_then_apply"] | None = None,
) -> float:
    """Matmul FLOPs of one head's `lact` over `tokens` tokens (apply + update, 2 per multiply-add).

    Apply: 3 matmuls of n×dk·dh or n×dh·dv; update: the forward's two key projections, W1ᵀv, and
    the three outer-product sums. With dk = dv = dh this is 18·n·dh² per head, the paper's
    18·n·d²·r/nh (App. A). Muon adds per update and matrix 5 steps of X Xᵀ, A², (bA + cA²) X.

    Args:
        tokens: Sequence length T.
        dk: Key (input) width.
        dh: Hidden width of the fast SwiGLU.
        dv: Value (output) width.
        chunk_size: Tokens per update.
        muon: Count Newton-Schulz.
        order: None: every token is applied and updates, every chunk runs Muon (the paper's per-
            token formula); "apply_then_update": what causal `lact` computes (the last chunk,
            1..C tokens, only applies); "update_then_apply": what bidirectional `lact` computes
            (every chunk, the remainder included, updates).
    """
    sizes = {"tokens": tokens, "dk": dk, "dh": dh, "dv": dv, "chunk_size": chunk_size}
    for name, value in sizes.items():
        if not is_integer(value) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive int.")
    apply = 2 * tokens * (dk * dh * 2 + dh * dv)
    updated, updates = tokens, math.ceil(tokens / chunk_size)
    if order == "apply_then_update":
        updates -= 1
        updated = updates * chunk_size
    elif order not in (None, "update_then_apply"):
        raise ValueError(f"order={order!r}: None, 'apply_then_update' or 'update_then_apply'.")
    update = 2 * updated * (2 * dk * dh + dv * dh + dv * dh + 2 * dh * dk)
    total = apply + update
    if muon:
        for m, n in ((dh, dk), (dv, dh), (dh, dk)):
            s, l_ = min(m, n), max(m, n)
            total += updates * 5 * 2 * (s * s * l_ + s * s * s + s * s * l_)
    return float(total)
