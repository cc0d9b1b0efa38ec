"""LaCT's chunked fast-weight layer against autodiff, per-token loops and its invariants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.nn.lact import (
    NS5_FIXED,
    NS5_PER_STEP,
    FastWeights,
    chunk_gradients,
    lact,
    lact_flops,
    newton_schulz,
    swiglu_fast,
)

DK, DH, DV = 8, 12, 6


def _weights(key, scale=0.5):
    k0, k1, k2 = jax.random.split(key, 3)
    return FastWeights(
        w0=scale * jax.random.normal(k0, (DH, DK)),
        w1=scale * jax.random.normal(k1, (DV, DH)),
        w2=scale * jax.random.normal(k2, (DH, DK)),
    )


def _sequence(key, T):
    kq, kk, kv, kl, kb = jax.random.split(key, 5)
    q = jax.random.normal(kq, (T, DK))
    k = jax.random.normal(kk, (T, DK))
    v = jax.random.normal(kv, (T, DV))
    lr = 0.05 * jax.random.uniform(kl, (T, 3), minval=0.5, maxval=1.5)
    beta = jax.random.uniform(kb, (T,))
    return q, k, v, lr, beta


def _loop_reference(q, k, v, lr, w, *, chunk, beta=None, causal=True):
    """A Python loop over chunks of the pipeline without Muon or norm restore."""
    T = q.shape[0]
    m = jax.tree.map(jnp.zeros_like, w)
    outs = []
    starts = list(range(0, T, chunk))
    for index, start in enumerate(starts):
        sl = slice(start, min(start + chunk, T))
        last = index == len(starts) - 1
        if causal:
            outs.append(swiglu_fast(w, q[sl]))
            if last:
                break
        grads = chunk_gradients(w, k[sl], v[sl], lr[sl])
        b = 0.0 if beta is None else jnp.mean(beta[sl])
        m = jax.tree.map(lambda mi, gi, b=b: b * mi + gi, m, grads)
        w = jax.tree.map(jnp.add, w, m)
        if not causal:
            outs.append(swiglu_fast(w, q[sl]))
    return jnp.concatenate(outs, axis=0)


def test_manual_gradients_equal_minus_autodiff(key):
    w = _weights(key)
    q, k, v, lr, _ = _sequence(jax.random.fold_in(key, 1), 7)

    def weighted_loss(w):  # Σ_i Σ_j η^(j)_i L_i, each matrix with its own η
        losses = -jnp.sum(swiglu_fast(w, k) * v, axis=-1)  # [n]
        return losses

    with jax.default_matmul_precision("highest"):
        manual = chunk_gradients(w, k, v, lr)
        for j, name in enumerate(FastWeights._fields):
            grad = jax.grad(lambda w, j=j: jnp.sum(lr[:, j] * weighted_loss(w)))(w)
            np.testing.assert_allclose(
                getattr(manual, name), -getattr(grad, name), rtol=1e-5, atol=1e-6
            )


def test_chunk_one_equals_a_per_token_loop(key):
    # Apply-then-update: o_t uses W_{t-1}, the weights after tokens 0..t-1.
    w = _weights(key)
    q, k, v, lr, _ = _sequence(jax.random.fold_in(key, 2), 9)
    out = lact(q, k, v, lr, w, chunk_size=1, weight_norm=False)
    expected, current = [], w
    for t in range(9):
        expected.append(swiglu_fast(current, q[t : t + 1]))
        grads = chunk_gradients(current, k[t : t + 1], v[t : t + 1], lr[t : t + 1])
        current = jax.tree.map(jnp.add, current, grads)
    np.testing.assert_allclose(out, jnp.concatenate(expected), rtol=1e-5, atol=1e-6)


def test_chunk_one_update_then_apply_uses_the_updated_weights(key):
    w = _weights(key)
    q, k, v, lr, _ = _sequence(jax.random.fold_in(key, 3), 5)
    out = lact(q, k, v, lr, w, chunk_size=1, weight_norm=False, order="update_then_apply")
    current, expected = w, []
    for t in range(5):
        grads = chunk_gradients(current, k[t : t + 1], v[t : t + 1], lr[t : t + 1])
        current = jax.tree.map(jnp.add, current, grads)
        expected.append(swiglu_fast(current, q[t : t + 1]))
    np.testing.assert_allclose(out, jnp.concatenate(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("T", [16, 23])
def test_chunk_at_least_T_uses_the_initial_weights(key, T):
    w = _weights(key)
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, 4), T)
    out = lact(q, k, v, lr, w, chunk_size=32, momentum=beta, muon=True)
    np.testing.assert_allclose(out, swiglu_fast(w, q), rtol=1e-6, atol=1e-6)
    # ... and exactly T = chunk too: the one chunk is the last, apply-only.
    out = lact(q, k, v, lr, w, chunk_size=T, momentum=beta)
    np.testing.assert_allclose(out, swiglu_fast(w, q), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("T", "chunk"), [(24, 8), (27, 8), (25, 8), (7, 3)])
@pytest.mark.parametrize("causal", [True, False])
def test_scan_equals_a_python_loop_with_remainder(key, T, chunk, causal):
    w = _weights(key)
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, T), T)
    order = "apply_then_update" if causal else "update_then_apply"
    out = lact(q, k, v, lr, w, chunk_size=chunk, momentum=beta, weight_norm=False, order=order)
    expected = _loop_reference(q, k, v, lr, w, chunk=chunk, beta=beta, causal=causal)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)


def test_momentum_zero_equals_no_momentum(key):
    w = _weights(key)
    q, k, v, lr, _ = _sequence(jax.random.fold_in(key, 5), 20)
    none = lact(q, k, v, lr, w, chunk_size=4)
    zero = lact(q, k, v, lr, w, chunk_size=4, momentum=jnp.zeros(20))
    np.testing.assert_array_equal(none, zero)


def test_row_norms_are_restored_after_each_update(key):
    w = _weights(key)
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, 6), 12)
    lr = lr * 20  # updates large enough to change the norms without the restore
    norms = [jnp.linalg.norm(m, axis=-1) for m in w]
    for chunk in (4, 6):
        # The weights after every update, by hand; the layer's last chunk (update-then-apply)
        # must read exactly these, and their row norms must be the initial ones.
        current = w
        for start in range(0, 12, chunk):
            sl = slice(start, start + chunk)
            grads = chunk_gradients(current, k[sl], v[sl], lr[sl])
            current = jax.tree.map(jnp.add, current, grads)
            current = jax.tree.map(
                lambda m, n: m / (jnp.linalg.norm(m, axis=-1, keepdims=True) + 1e-5) * n[:, None],
                current,
                FastWeights(*norms),
            )
        out = lact(q, k, v, lr, w, chunk_size=chunk, order="update_then_apply")
        np.testing.assert_allclose(out[-chunk:], swiglu_fast(current, q[-chunk:]), rtol=1e-4)
        for m, n in zip(current, norms, strict=True):
            np.testing.assert_allclose(jnp.linalg.norm(m, axis=-1), n, rtol=1e-4)
    unrestored = lact(q, k, v, lr, w, chunk_size=4, order="update_then_apply", weight_norm=False)
    assert not np.allclose(
        unrestored, lact(q, k, v, lr, w, chunk_size=4, order="update_then_apply")
    )


@pytest.mark.parametrize("coefficients", [NS5_PER_STEP, NS5_FIXED], ids=["per_step", "fixed"])
def test_newton_schulz_invariances_and_spectrum(key, coefficients):
    g = jax.random.normal(key, (12, 20))
    ns = functools.partial(newton_schulz, coefficients=coefficients, dtype=jnp.float32)
    x = ns(g)
    np.testing.assert_allclose(ns(3.7 * g), x, rtol=1e-4, atol=1e-5)  # scale invariant
    np.testing.assert_allclose(ns(g.T), x.T, rtol=1e-5, atol=1e-6)  # transpose equivariant
    singular = np.linalg.svd(np.asarray(x), compute_uv=False)
    assert singular.min() > 0.5 and singular.max() < 1.3, singular
    # It approximates the polar factor U Vᵀ: same singular vectors as g.
    u, _, vt = np.linalg.svd(np.asarray(g), full_matrices=False)
    polar = u @ vt
    cosine = np.sum(polar * np.asarray(x)) / (np.linalg.norm(polar) * np.linalg.norm(x))
    assert cosine > 0.97, cosine
    # bfloat16, as the code computes, stays close to float32.
    np.testing.assert_allclose(newton_schulz(g, coefficients), x, atol=0.05)


def test_zero_steps_only_normalise(key):
    g = jax.random.normal(key, (6, 4))
    x = newton_schulz(g, coefficients=(), dtype=jnp.float32)
    np.testing.assert_allclose(x, g / jnp.linalg.norm(g), rtol=1e-6)


def test_muon_changes_the_update_and_stays_finite(key):
    w = _weights(key)
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, 7), 24)
    plain = lact(q, k, v, lr, w, chunk_size=8, momentum=beta)
    muon = lact(q, k, v, lr, w, chunk_size=8, momentum=beta, muon=True)
    assert np.all(np.isfinite(muon)) and not np.allclose(plain[8:], muon[8:])
    np.testing.assert_allclose(plain[:8], muon[:8], rtol=1e-6)  # chunk 0 uses W0 either way


@pytest.mark.parametrize("order", ["apply_then_update", "update_then_apply"])
def test_causality_by_perturbation(key, order):
    # Causal order: outputs before the perturbed token's chunk cannot change; bidirectional
    # chunks may see their own chunk, never later ones.
    w = _weights(key)
    T, chunk, t = 24, 8, 13
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, 8), T)
    run = functools.partial(lact, chunk_size=chunk, momentum=beta, muon=True, order=order)
    base = run(q, k, v, lr, w)
    moved = run(q, k.at[t].add(1.0), v.at[t].add(1.0), lr, w)
    own_chunk = t // chunk
    boundary = (own_chunk + (order == "apply_then_update")) * chunk  # first output that may move
    np.testing.assert_array_equal(base[:boundary], moved[:boundary])
    assert not np.allclose(base[boundary:], moved[boundary:])


def test_vmaps_over_batch_and_heads(key):
    w = jax.vmap(_weights)(jax.random.split(key, 3))  # 3 heads
    data = jax.vmap(lambda k: jax.vmap(lambda kk: _sequence(kk, 10))(jax.random.split(k, 3)))(
        jax.random.split(jax.random.fold_in(key, 9), 2)
    )  # [B=2, H=3, ...]
    q, k, v, lr, beta = data
    run = functools.partial(lact, chunk_size=4)
    batched = jax.jit(
        jax.vmap(jax.vmap(lambda q, k, v, lr, b, w: run(q, k, v, lr, w, momentum=b)),
                 in_axes=(0, 0, 0, 0, 0, None))
    )(q, k, v, lr, beta, w)  # fmt: skip
    assert batched.shape == (2, 3, 10, DV)
    head = jax.tree.map(lambda m: m[1], w)
    np.testing.assert_allclose(
        batched[1, 1], run(q[1, 1], k[1, 1], v[1, 1], lr[1, 1], head, momentum=beta[1, 1]),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_flops_formula_matches_the_paper_and_xla(key):
    d, n = 16, 64
    assert lact_flops(n, d, d, d, chunk_size=16) == 18 * n * d * d  # App. A: 18 n d^2 per head
    w = FastWeights(jnp.ones((d, d)), jnp.ones((d, d)), jnp.ones((d, d)))
    x = jnp.ones((n, d))
    run = functools.partial(lact, chunk_size=16, weight_norm=False)
    cost = jax.jit(run).lower(x, x, x, jnp.ones((n, 3)), w).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # XLA counts a scan's body once, not per iteration: one chunk's apply + update (9 matmuls of
    # 16 x d x d) plus the apply-only last chunk (3), and some elementwise work.
    per_chunk = 2 * 16 * d * d
    assert 12 * per_chunk <= cost["flops"] <= 1.3 * 12 * per_chunk


def test_bad_arguments(key):
    w = _weights(key)
    q, k, v, lr, beta = _sequence(key, 8)
    with pytest.raises(ValueError, match="chunk_size"):
        lact(q, k, v, lr, w, chunk_size=0)
    # Shape errors, named by the function itself (the test hook's type checks skip it).
    with pytest.raises(ValueError):
        lact(q, k, v, lr[:, :2], w, chunk_size=4)
    with pytest.raises(ValueError):
        lact(q, k, v, lr, w, chunk_size=4, momentum=beta[:5])
    with pytest.raises(ValueError, match="w1.shape"):
        lact(q, k, v, lr, w._replace(w1=w.w1[:, :3]), chunk_size=4)
    with pytest.raises(ValueError, match="order"):
        lact(q, k, v, lr, w, chunk_size=4, order="sideways")
    # Types: an int32 q ran and came back int32; a tuple for FastWeights, a string flag.
    with pytest.raises(ValueError, match="q: dtype int32; expected a floating"):
        lact(q.astype(jnp.int32), k, v, lr, w, chunk_size=4)
    with pytest.raises(ValueError, match="initial: tuple; expected FastWeights"):
        lact(q, k, v, lr, tuple(w), chunk_size=4)
    with pytest.raises(ValueError, match="muon='yes': expected True or False"):
        lact(q, k, v, lr, w, chunk_size=4, muon="yes")


def test_lact_flops_bad_sizes():
    """chunk_size 0 divided by zero; a float token count came back as a float count."""
    with pytest.raises(ValueError, match="chunk_size=0: expected a positive int"):
        lact_flops(64, 8, 8, 8, 0)
    with pytest.raises(ValueError, match="tokens=8.5"):
        lact_flops(8.5, 8, 8, 8, 4)


@pytest.mark.parametrize("causal", [True, False])
def test_gradients_through_the_scan_equal_the_python_loop(key, causal):
    # `lact` rematerialises its chunk body; the loop reference is plain autodiff.
    w = _weights(key)
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, 11), 19)
    r = jax.random.normal(jax.random.fold_in(key, 12), (19, DV))
    order = "apply_then_update" if causal else "update_then_apply"

    def ours(q, k, v, lr, beta, w):
        out = lact(q, k, v, lr, w, chunk_size=4, momentum=beta, weight_norm=False, order=order)
        return jnp.sum(out * r)

    def loop(q, k, v, lr, beta, w):
        return jnp.sum(_loop_reference(q, k, v, lr, w, chunk=4, beta=beta, causal=causal) * r)

    with jax.default_matmul_precision("highest"):
        got = jax.jit(jax.grad(ours, argnums=range(6)))(q, k, v, lr, beta, w)
        want = jax.grad(loop, argnums=range(6))(q, k, v, lr, beta, w)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        # atol relative to the largest entry: small entries are sums of cancelling terms of
        # that size (gradients reach ~1e2 here), rounded differently by the two programs.
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(e))))


def test_unrolled_scan_equals_the_loop_in_value_and_gradient(key):
    w = _weights(key)
    q, k, v, lr, beta = _sequence(jax.random.fold_in(key, 13), 22)

    def loss(unroll, q, w):
        out = lact(q, k, v, lr, w, chunk_size=4, momentum=beta, unroll=unroll)
        return jnp.sum(out**2)

    with jax.default_matmul_precision("highest"):
        rolled = jax.value_and_grad(functools.partial(loss, 1), argnums=(0, 1))(q, w)
        unrolled = jax.value_and_grad(functools.partial(loss, True), argnums=(0, 1))(q, w)
    for a, b in zip(jax.tree.leaves(rolled), jax.tree.leaves(unrolled), strict=True):
        # As above: atol relative to the largest gradient entry (~3e2 here).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize(("T", "chunk"), [(64, 16), (70, 16), (64, 64)])
def test_flops_by_order_match_the_unrolled_xla_count(T, chunk):
    d, c = 16, chunk
    per_token_apply, per_token_update = 2 * 3 * d * d, 2 * 6 * d * d
    updated = (-(-T // c) - 1) * c  # causal: every chunk but the last updates
    causal = lact_flops(T, d, d, d, c, order="apply_then_update")
    assert causal == T * per_token_apply + updated * per_token_update
    assert lact_flops(T, d, d, d, c, order="update_then_apply") == lact_flops(T, d, d, d, c)
    assert lact_flops(T, d, d, d, c) == 18 * T * d * d
    with_muon = lact_flops(T, d, d, d, c, muon=True, order="apply_then_update")
    assert with_muon - causal == (-(-T // c) - 1) * 3 * 5 * 2 * 3 * d**3  # per update, matrix
    w = FastWeights(*(jax.ShapeDtypeStruct((d, d), jnp.float32),) * 3)
    x = jax.ShapeDtypeStruct((T, d), jnp.float32)
    lr = jax.ShapeDtypeStruct((T, 3), jnp.float32)
    run = functools.partial(lact, chunk_size=c, weight_norm=False, unroll=True)
    cost = jax.jit(run).lower(x, x, x, lr, w).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # The unrolled program's count adds elementwise work (SiLU, products, momentum) to the dots.
    assert causal <= cost["flops"] <= 1.15 * causal
    with pytest.raises(ValueError, match="order"):
        lact_flops(T, d, d, d, c, order="sideways")
