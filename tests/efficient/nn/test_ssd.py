"""SSD: chunked == quadratic == sequential scan (float64 and float32), state carry, causality,
finite gradients under extreme decay, groups; the Mamba-2 mixer against its explicit formula."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficient.nn import Mamba2Mixer, ssd_chunked, ssd_quadratic, ssd_scan

TOL = {jnp.float64: 1e-10, jnp.float32: 1e-5}


@pytest.fixture
def x64():
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        yield


def _inputs(seed, batch=2, T=12, H=4, K=3, G=2, N=5, dtype=jnp.float64, initial=True):
    """x, dt (softplus of a normal: Δ > 0), A (< 0), B, C, D, initial_state."""
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.normal(size=shape)  # noqa: E731
    arrays = dict(
        x=draw(batch, T, H, K),
        dt=np.log1p(np.exp(draw(batch, T, H))),
        A=-np.exp(draw(H)),
        B=draw(batch, T, G, N),
        C=draw(batch, T, G, N),
        D=draw(H),
        initial_state=draw(batch, H, K, N) if initial else None,
    )
    return {k: None if v is None else jnp.asarray(v, dtype) for k, v in arrays.items()}


def _close(got, want, dtype):
    tol = TOL[dtype]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


def _split(args):
    """(positional x, dt, A, B, C; keyword D, initial_state)."""
    pos = tuple(args[k] for k in ("x", "dt", "A", "B", "C"))
    return pos, {k: args[k] for k in ("D", "initial_state")}


@functools.cache
def _chunked(chunk_size):
    """One jitted `ssd_chunked` per chunk size, shared by the tests (compiles are the cost)."""
    return jax.jit(functools.partial(ssd_chunked, chunk_size=chunk_size))


@pytest.mark.parametrize(("groups", "chunk_sizes"), [(1, [1, 4, 12, 5, 64]), (2, [4, 5])])
def test_chunked_equals_quadratic_equals_scan_fp64(x64, groups, chunk_sizes):
    pos, kw = _split(_inputs(groups, G=groups))
    y_scan, h_scan = ssd_scan(*pos, **kw)
    y_quad, h_quad = ssd_quadratic(*pos, **kw)
    _close(y_quad, y_scan, jnp.float64)
    _close(h_quad, h_scan, jnp.float64)
    # T = 12: chunks of 1, 4 and T divide it; 5 leaves a padded tail; 64 > T is clipped to T.
    for chunk_size in chunk_sizes:
        y, h = _chunked(chunk_size)(*pos, **kw)
        assert y.dtype == h.dtype == jnp.float64 and y.shape == pos[0].shape
        _close(y, y_scan, jnp.float64)
        _close(h, h_scan, jnp.float64)


def test_chunked_equals_scan_fp32():
    # T = 13 with chunks of 4: a padded tail.
    pos, kw = _split(_inputs(7, T=13, dtype=jnp.float32))
    with jax.default_matmul_precision("highest"):
        y_scan, h_scan = ssd_scan(*pos, **kw)
        y, h = _chunked(4)(*pos, **kw)
    assert y.dtype == h.dtype == jnp.float32
    _close(y, y_scan, jnp.float32)
    _close(h, h_scan, jnp.float32)


def test_fp32_forms_match_a_float64_loop_under_large_cumulative_decay():
    # Σ Δ a reaches -16,000 over T = 2048 (a = -16, Mamba-2's init range end): a mask from
    # differences of cumulative sums lost ~5e-5 here (and ~1e-2 after huge steps); segment sums
    # keep every form at f32 round-off.
    rng = np.random.default_rng(0)
    T = 2048
    x, B, C = (rng.standard_normal(s) for s in [(1, T, 1, 2), (1, T, 1, 3), (1, T, 1, 3)])
    dt, A = rng.uniform(0.05, 1.0, (1, T, 1)), np.array([-16.0])
    h, want = np.zeros((2, 3)), np.zeros((T, 2))
    for t in range(T):
        h = np.exp(dt[0, t, 0] * A[0]) * h + dt[0, t, 0] * np.outer(x[0, t, 0], B[0, t, 0])
        want[t] = h @ C[0, t, 0]
    args = [jnp.asarray(v, jnp.float32) for v in (x, dt, A, B, C)]
    with jax.default_matmul_precision("highest"):
        for fn in (ssd_quadratic, ssd_scan, _chunked(64)):
            y, final = fn(*args)
            np.testing.assert_allclose(np.asarray(y)[0, :, 0], want, atol=3e-6 * abs(want).max())
            np.testing.assert_allclose(np.asarray(final)[0, 0], h, atol=3e-6 * abs(h).max())


def test_scan_matches_numpy_loop(x64):
    args = _inputs(3, batch=1, T=5, H=2, K=2, G=1, N=3)
    x, dt, A, B, C, D, h = (np.array(v) for v in args.values())
    want = np.zeros_like(x)
    for t in range(5):
        for head in range(2):
            h[0, head] = np.exp(dt[0, t, head] * A[head]) * h[0, head] + dt[0, t, head] * np.outer(
                x[0, t, head], B[0, t, 0]
            )
            want[0, t, head] = h[0, head] @ C[0, t, 0] + D[head] * x[0, t, head]
    pos, kw = _split(args)
    y, final = ssd_scan(*pos, **kw)
    _close(y, want, jnp.float64)
    _close(final, h, jnp.float64)


def test_gradients_match_scan(x64):
    pos, kw = _split(_inputs(11, T=10))
    w = jax.random.normal(jax.random.key(1), pos[0].shape, jnp.float64)

    def loss(fn, pos, kw):
        y, h = fn(*pos, **kw)
        return jnp.sum(y * w) + jnp.sum(jnp.sin(h))

    want = jax.grad(lambda p, k: loss(ssd_scan, p, k), argnums=(0, 1))(pos, kw)
    got = jax.jit(
        jax.grad(
            lambda p, k: loss(lambda *a, **b: ssd_chunked(*a, chunk_size=4, **b), p, k),
            argnums=(0, 1),
        )
    )(pos, kw)
    jax.tree.map(lambda g, v: _close(g, v, jnp.float64), got, want)


def test_state_carry(x64):
    # y([x1; x2]) restricted to x2 == y(x2 from x1's final state), and the final states agree;
    # the split (7) and both lengths (7, 8) are off the chunk grid (4).
    split = 7
    args = _inputs(5, T=15)
    pos, kw = _split(args)
    run = _chunked(4)
    y, h = run(*pos, **kw)
    first = [a[:, :split] if a.ndim > 1 else a for a in pos]
    second = [a[:, split:] if a.ndim > 1 else a for a in pos]
    _, h1 = run(*first, **kw)
    y2, h2 = run(*second, D=kw["D"], initial_state=h1)
    _close(y2, y[:, split:], jnp.float64)
    _close(h2, h, jnp.float64)


def test_causal():
    args = _inputs(2, T=11, dtype=jnp.float32)
    pos, kw = _split(args)
    run = _chunked(4)
    y, _ = run(*pos, **kw)
    t0 = 6
    for name in ["x", "dt", "B", "C"]:
        perturbed = {**args, name: args[name].at[:, t0].add(1.0)}
        y2, _ = run(*_split(perturbed)[0], **kw)
        changed = np.asarray(jnp.any(y2 != y, axis=(0, 2, 3)))
        np.testing.assert_array_equal(changed[:t0], False, err_msg=name)
        assert changed[t0], name


def test_debug_infs_and_nans_stay_quiet_on_finite_inputs():
    # The masked upper triangle is a finite "minus infinity": jax.debug_infs, which checks every
    # primitive's output, used to stop at the mask's -inf on any input.
    pos, kw = _split(_inputs(3, T=9, dtype=jnp.float32))
    mixer = Mamba2Mixer(state_dim=8, head_dim=8, chunk_size=4)
    u = jnp.asarray(np.random.default_rng(0).normal(size=(1, 8, 16)), jnp.float32)
    params = mixer.init(jax.random.key(0), u)
    runs = {
        "chunked": lambda pos: ssd_chunked(*pos, chunk_size=4, **kw)[0],
        "quadratic": lambda pos: ssd_quadratic(*pos, D=kw["D"]),  # (y, final state)
        "mixer": lambda pos: mixer.apply(params, u * pos[0].sum()),
    }
    with jax.debug_infs(True), jax.debug_nans(True):
        for name, run in runs.items():
            out = jax.tree.leaves(run(pos))
            loss = lambda pos, run=run: sum(jnp.sum(v**2) for v in jax.tree.leaves(run(pos)))  # noqa: E731
            grads = jax.grad(loss)(pos)
            for value in (*out, *grads):
                assert np.all(np.isfinite(np.asarray(value))), name


def test_finite_gradients_under_extreme_decay():
    # a·Δ down to -5e5 (and chunk 256 with a padded tail): exp underflows to 0 everywhere off the
    # diagonal; masking before the exp keeps 0 * inf out of the backward pass.
    args = _inputs(9, batch=1, T=300, H=2, K=2, G=1, N=2, dtype=jnp.float32)
    args["A"] = jnp.full((2,), -1e4, jnp.float32)
    args["dt"] = args["dt"] * 20.0
    pos, kw = _split(args)

    def loss(pos, kw):
        y, h = ssd_chunked(*pos, chunk_size=256, **kw)
        return jnp.sum(jnp.square(y)) + jnp.sum(jnp.square(h))

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(pos, kw)
    assert np.isfinite(float(value))
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(np.asarray(g)))
    y, _ = _chunked(256)(*pos, **kw)
    y_scan, _ = ssd_scan(*pos, **kw)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_scan), rtol=1e-5, atol=1e-5)


def test_groups_equal_repeated_heads(x64):
    # G = 2 groups of 2 heads == G = H with each group's B, C repeated for its heads (h // 2).
    pos, kw = _split(_inputs(4, H=4, G=2))
    x, dt, A, B, C = pos
    y, h = _chunked(4)(*pos, **kw)
    rep = [jnp.repeat(v, 2, axis=2) for v in (B, C)]
    y_rep, h_rep = _chunked(4)(x, dt, A, *rep, **kw)
    _close(y, y_rep, jnp.float64)
    _close(h, h_rep, jnp.float64)


def test_quadratic_explicit_log_decay(x64):
    args = _inputs(6)
    pos, kw = _split(args)
    x, dt, A, B, C = pos
    y, h = ssd_quadratic(*pos, **kw)
    y2, h2 = ssd_quadratic(x, dt, None, B, C, log_decay=dt * A[None, None, :], **kw)
    _close(y2, y, jnp.float64)
    _close(h2, h, jnp.float64)
    # A log-decay independent of Δ: the recurrence with exp(log_decay_t) as the decay.
    log_decay = -jnp.abs(jnp.asarray(np.random.default_rng(0).normal(size=dt.shape)))
    y3, h3 = ssd_quadratic(x, dt, None, B, C, log_decay=log_decay, **kw)
    Bh, Ch = (np.repeat(np.asarray(v), 2, axis=2) for v in (B, C))
    state = np.asarray(kw["initial_state"]).copy()
    want = np.zeros(x.shape)
    for t in range(x.shape[1]):
        decay = np.exp(np.asarray(log_decay)[:, t])[..., None, None]
        u = np.asarray(x)[:, t] * np.asarray(dt)[:, t, :, None]
        state = decay * state + np.einsum("bhk,bhn->bhkn", u, Bh[:, t])
        want[:, t] = np.einsum("bhkn,bhn->bhk", state, Ch[:, t])
    want += np.asarray(kw["D"])[None, None, :, None] * np.asarray(x)
    _close(y3, want, jnp.float64)
    _close(h3, state, jnp.float64)


def _bad_cases():
    def with_(**changes):
        def make():
            args = _inputs(0, batch=1, T=4, H=4, K=2, G=2, N=3, dtype=jnp.float32)
            args.update(changes)
            return args

        return make

    f32 = lambda *s: jnp.zeros(s, jnp.float32)  # noqa: E731
    return [
        (with_(dt=f32(1, 5, 4)), {}, r"dt.shape=\(1, 5, 4\)"),
        (with_(A=f32(3)), {}, r"A.shape=\(3,\)"),
        (with_(B=f32(1, 3, 2, 3)), {}, r"B.shape=\(1, 3, 2, 3\)"),
        (with_(C=f32(1, 4, 2, 2)), {}, r"C.shape=\(1, 4, 2, 2\)"),
        (with_(B=f32(1, 4, 3, 3), C=f32(1, 4, 3, 3)), {}, "G=3 groups, which must divide the H=4"),
        (with_(D=f32(2)), {}, r"D.shape=\(2,\)"),
        (with_(initial_state=f32(1, 4, 2, 2)), {}, r"initial_state.shape=\(1, 4, 2, 2\)"),
        # Integer inputs used to come back truncated to an integer y.
        (with_(x=jnp.ones((1, 4, 4, 2), jnp.int32)), {}, "x: dtype int32; expected a floating"),
        (with_(dt=jnp.ones((1, 4, 4), jnp.int32)), {}, "dt: dtype int32; expected a floating"),
        # A missing, or a list: a named error, not an AttributeError from inside.
        (with_(A=None), {}, "A: NoneType; expected a jax or numpy array"),
        (with_(x=np.zeros((1, 4, 4, 2)).tolist()), {}, "x: list; expected a jax or numpy array"),
        (with_(B=None), {}, "B: NoneType; expected a jax or numpy array"),
        (with_(), {"chunk_size": 0}, "chunk_size=0: expected an int >= 1"),
        (with_(), {"chunk_size": None}, "chunk_size=None: expected an int >= 1"),
        (with_(), {"chunk_size": True}, "chunk_size=True: expected an int >= 1"),
        (with_(), {"chunk_size": 2.0}, "chunk_size=2.0: expected an int >= 1"),
    ]


@pytest.mark.parametrize(("make", "extra", "match"), _bad_cases())
def test_bad_inputs(make, extra, match):
    kwargs = {"chunk_size": 2, **extra}
    pos, kw = _split(make())
    with pytest.raises(ValueError):
        ssd_chunked(*pos, **kw, **kwargs)


@pytest.mark.parametrize(("make", "extra", "match"), _bad_cases())
def test_bad_inputs_messages(make, extra, match):
    pos, kw = _split(make())
    with pytest.raises(ValueError, match=match):
        ssd_chunked(*pos, **kw, **{"chunk_size": 2, **extra})
    if not extra:
        with pytest.raises(ValueError, match=match):
            ssd_scan(*pos, **kw)


def test_numpy_integer_chunk_size():
    pos, kw = _split(_inputs(1, T=7, dtype=jnp.float32))
    want = ssd_chunked(*pos, **kw, chunk_size=3)
    got = ssd_chunked(*pos, **kw, chunk_size=np.int64(3))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("initial", [False, True])
def test_no_positions(initial):
    """T = 0: every form returns an empty y and the initial state (zero without one)."""
    pos, kw = _split(_inputs(2, T=0, initial=initial, dtype=jnp.float32))
    want = kw["initial_state"] if initial else jnp.zeros((2, 4, 3, 5), jnp.float32)
    for y, state in (
        ssd_chunked(*pos, **kw, chunk_size=4),
        ssd_quadratic(*pos, **kw),
        ssd_scan(*pos, **kw),
    ):
        assert y.shape == (2, 0, 4, 3)
        np.testing.assert_array_equal(np.asarray(state), np.asarray(want))


def test_quadratic_needs_exactly_one_decay():
    pos, kw = _split(_inputs(0, T=4, dtype=jnp.float32))
    x, dt, A, B, C = pos
    with pytest.raises(ValueError, match="exactly one of A and log_decay"):
        ssd_quadratic(x, dt, None, B, C, **kw)
    with pytest.raises(ValueError, match="exactly one of A and log_decay"):
        ssd_quadratic(*pos, log_decay=dt, **kw)
    with pytest.raises(ValueError, match="log_decay: list; expected a jax or numpy array"):
        ssd_quadratic(x, dt, None, B, C, log_decay=np.asarray(dt).tolist(), **kw)


# --- Mamba2Mixer ------------------------------------------------------------------------------

SMALL = dict(state_dim=4, head_dim=4, chunk_size=4)  # D = 8, expand 2 -> H = 4 heads of 4
MIXER = Mamba2Mixer(**SMALL)
# Shared jitted functions: each test below reuses their compiled forms.
INIT, APPLY = jax.jit(MIXER.init), jax.jit(MIXER.apply)


def _mixer_inputs(T=10, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(3), (2, T, 8), dtype)


def test_mixer_params_shapes_and_axes():
    variables = INIT(jax.random.key(0), _mixer_inputs())
    shapes = jax.tree.map(jnp.shape, nn.meta.unbox(variables["params"]))
    # d_inner = 16, conv over x, B, C = 16 + 2 * 4, in_proj out = 2 * 16 + 2 * 4 + 4 heads.
    assert shapes == {
        "in_proj": {"kernel": (8, 44), "bias": (44,)},
        "conv1d": {"kernel": (4, 24), "bias": (24,)},
        "A_log": (4,),
        "dt_bias": (4,),
        "D": (4,),
        "norm": {"scale": (16,)},
        "out_proj": {"kernel": (16, 8), "bias": (8,)},
    }
    boxed = jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned)
    )
    names = {jax.tree_util.keystr(path): leaf.names for path, leaf in boxed}
    assert names["['A_log']"] == names["['dt_bias']"] == names["['D']"] == ("heads",)
    assert names["['in_proj']['kernel']"] == ("embed", "mlp")
    assert names["['conv1d']['kernel']"] == ("conv_width", "mlp")
    assert names["['out_proj']['kernel']"] == ("mlp", "embed")


def test_mixer_inits():
    # dt_min below the floor: a quarter of the log-uniform draws are floored at 1e-4.
    mixer = Mamba2Mixer(state_dim=16, head_dim=1, expand=16, dt_min=1e-5)  # 128 heads
    params = nn.meta.unbox(jax.jit(mixer.init)(jax.random.key(0), _mixer_inputs(T=2))["params"])
    a = np.exp(np.asarray(params["A_log"]))
    assert a.min() >= 1.0 and a.max() <= 16.0 and a.max() - a.min() > 10
    dt0 = np.asarray(jax.nn.softplus(params["dt_bias"]))  # softplus⁻¹ round trip
    floored = np.isclose(dt0, 1e-4, rtol=1e-4)
    assert 10 < floored.sum() < 60
    np.testing.assert_array_less(1e-4, dt0[~floored])
    np.testing.assert_array_less(dt0, 1e-1 * (1 + 1e-5))
    np.testing.assert_array_equal(np.asarray(params["D"]), 1.0)
    kernel = np.asarray(params["in_proj"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.002 and not np.any(np.asarray(params["in_proj"]["bias"]))
    # torch's Conv1d default, as mamba_ssm keeps it: kernel and bias U(±1/sqrt(W)), W = 4.
    for name in ("kernel", "bias"):
        conv = np.asarray(params["conv1d"][name])
        assert np.abs(conv).max() <= 0.5 and abs(conv.std() - 0.5 / 3**0.5) < 0.03, name


def test_mixer_is_causal_and_dt_scale_one_is_the_default():
    u = _mixer_inputs()
    variables = INIT(jax.random.key(0), u)
    y = APPLY(variables, u)
    assert y.shape == u.shape and y.dtype == jnp.float32
    y2 = APPLY(variables, u.at[:, 6].add(1.0))
    changed = np.asarray(jnp.any(y2 != y, axis=(0, 2)))
    np.testing.assert_array_equal(changed, [False] * 6 + [True] * 4)
    ones = jnp.ones((2, 10, 4), jnp.float32)
    # Equal up to float32 rounding: the two programs compile (and may fuse) separately.
    np.testing.assert_allclose(np.asarray(APPLY(variables, u, ones)), np.asarray(y), atol=1e-7)
    # dt_scale != 1 is checked against the written-out formula below.
    with pytest.raises(ValueError, match="dt_scale"):
        MIXER.apply(variables, u, jnp.ones((2, 10, 3), jnp.float32))
    # Named, not an unpacking error or an AttributeError from inside.
    with pytest.raises(ValueError, match=r"inputs.shape=\(10, 8\): expected \[B, T, D\]"):
        MIXER.apply(variables, u[0])
    with pytest.raises(ValueError, match="dt_scale: list; expected a jax or numpy array"):
        MIXER.apply(variables, u, np.ones((2, 10, 4)).tolist())


@pytest.mark.parametrize(("activation", "groups"), [("silu", 1), ("hardswish", 2)])
def test_mixer_matches_explicit_formula(x64, activation, groups):
    """in_proj -> conv -> act -> SSD (the sequential scan) -> gated RMSNorm -> out_proj, written
    out with numpy and `ssd_scan` from random parameters (mamba_ssm's Mamba2.forward semantics)."""
    mixer = Mamba2Mixer(
        activation=activation, num_groups=groups, param_dtype=jnp.float64, norm_eps=1e-5, **SMALL
    )
    T, H, K, G, N, d_inner = 9, 4, 4, groups, 4, 16
    u = _mixer_inputs(T=T, dtype=jnp.float64)
    rng = np.random.default_rng(0)
    shapes = nn.meta.unbox(jax.eval_shape(mixer.init, jax.random.key(0), u)["params"])
    params = jax.tree.map(lambda a: 0.5 * rng.normal(size=a.shape), shapes)
    dt_scale = rng.uniform(0.5, 2.0, size=(2, T, H))
    got = jax.jit(mixer.apply)({"params": params}, u, jnp.asarray(dt_scale))

    u = np.asarray(u)
    p = u @ params["in_proj"]["kernel"] + params["in_proj"]["bias"]
    z, xBC, dt = np.split(p, [d_inner, 2 * d_inner + 2 * G * N], axis=-1)
    w = params["conv1d"]["kernel"]
    padded = np.pad(xBC, ((0, 0), (3, 0), (0, 0)))
    xBC = sum(padded[:, j : j + T] * w[j] for j in range(4)) + params["conv1d"]["bias"]
    silu, hardswish = xBC / (1 + np.exp(-xBC)), xBC * np.clip(xBC + 3, 0, 6) / 6
    xBC = silu if activation == "silu" else hardswish
    x, B, C = np.split(xBC, [d_inner, d_inner + G * N], axis=-1)
    delta = np.log1p(np.exp(dt * dt_scale + params["dt_bias"]))
    y, _ = ssd_scan(
        jnp.asarray(x.reshape(2, T, H, K)),
        jnp.asarray(delta),
        jnp.asarray(-np.exp(params["A_log"])),
        jnp.asarray(B.reshape(2, T, G, N)),
        jnp.asarray(C.reshape(2, T, G, N)),
        D=jnp.asarray(params["D"]),
    )
    g = np.asarray(y).reshape(2, T, d_inner) * (z / (1 + np.exp(-z)))
    g = g.reshape(2, T, G, d_inner // G)
    g = g / np.sqrt(np.mean(g**2, axis=-1, keepdims=True) + 1e-5)
    g = g.reshape(2, T, d_inner) * params["norm"]["scale"]
    want = g @ params["out_proj"]["kernel"] + params["out_proj"]["bias"]
    _close(got, want, jnp.float64)


def test_mixer_runs_in_bf16():
    u = _mixer_inputs()
    variables = INIT(jax.random.key(0), u)
    y16 = jax.jit(Mamba2Mixer(dtype=jnp.bfloat16, **SMALL).apply)(variables, u)
    y32 = APPLY(variables, u)
    assert y16.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(y32)))
    np.testing.assert_allclose(
        np.asarray(y16, np.float32), np.asarray(y32), atol=3e-2 * scale, rtol=0
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"head_dim": 5}, "head_dim=5"),
        ({"num_groups": 3}, "num_groups=3"),
        ({"A_init_range": (0.0, 1.0)}, "A_init_range"),
        ({"activation": "gelu"}, "activation"),
    ],
)
def test_mixer_bad_config(overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Mamba2Mixer(**{**SMALL, **overrides}).init(jax.random.key(0), _mixer_inputs())


def test_dt_bias_init_is_the_inverse_softplus_of_the_drawn_dt():
    """mamba_ssm: dt = max(exp(U(log dt_min, log dt_max)), floor); dt_bias = dt + log(-expm1(-dt))
    = log(expm1(dt)), softplus⁻¹(dt) — not log(dt) (softplus(log dt) = log(1 + dt), off by
    ~dt / 2 relative). Float64 numpy from the same uniform draws (jax.random.uniform's)."""
    from efficient.nn.ssd import _dt_bias_init

    dt_min, dt_max, floor = 1e-5, 1e-1, 1e-4  # a quarter of the draws land on the floor
    key = jax.random.key(5)
    got = np.asarray(_dt_bias_init(dt_min, dt_max, floor)(key, (256,)), np.float64)
    log_dt = jax.random.uniform(key, (256,), jnp.float32, math.log(dt_min), math.log(dt_max))
    dt = np.maximum(np.exp(np.asarray(log_dt, np.float64)), floor)
    assert 30 < (dt == floor).sum() < 100
    np.testing.assert_allclose(got, np.log(np.expm1(dt)), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.log1p(np.exp(got)), dt, rtol=2e-6)  # softplus round trip
    assert np.min(np.abs(got - np.log(dt))) > 4e-5  # log(expm1(dt)) - log(dt) ~ dt / 2


def test_mixer_dt_bias_inverts_softplus_to_the_floor():
    """Through the mixer: softplus(dt_bias) lies in [dt_min, dt_max] or is the floor, to 2e-6
    (log dt would give log(1 + dt): 5e-5 relative at the 1e-4 floor)."""
    mixer = Mamba2Mixer(state_dim=4, head_dim=1, expand=16, dt_min=1e-5)  # 128 heads
    params = nn.meta.unbox(jax.jit(mixer.init)(jax.random.key(0), _mixer_inputs(T=2))["params"])
    dt0 = np.log1p(np.exp(np.asarray(params["dt_bias"], np.float64)))
    floored = np.abs(dt0 / 1e-4 - 1.0) < 2e-6
    assert 10 < floored.sum() < 60
    rest = dt0[~floored]
    assert rest.min() >= 1e-4 and rest.max() <= 1e-1 * (1 + 2e-6)


def test_mixer_default_norm_eps_is_mamba2s():
    """Default-config mixer (norm_eps unset): its gated RMSNorm, seen through the 'norm'
    submodule's inputs and output, is g / sqrt(mean(g²) + 1e-5) · scale with g = y ⊙ SiLU(z),
    on activations small enough (rms ~1e-3) that the epsilon dominates."""
    u = 0.1 * _mixer_inputs()
    variables = INIT(jax.random.key(0), u)
    seen = []

    def spy(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.module.name == "norm" and context.method_name == "__call__":
            seen.append((args, out))
        return out

    with nn.intercept_methods(spy):
        MIXER.apply(variables, u)
    assert len(seen) == 1
    (y, z), out = seen[0]
    y, z = np.asarray(y, np.float64), np.asarray(z, np.float64)
    g = y * z / (1.0 + np.exp(-z))
    rms = np.sqrt(np.mean(g**2))
    assert 1e-4 < rms < 1e-2  # mean square well below 1e-5: eps 1e-6 would be ~3x off
    scale = np.asarray(nn.meta.unbox(variables["params"])["norm"]["scale"], np.float64)
    want = g / np.sqrt(np.mean(g**2, axis=-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-7)
