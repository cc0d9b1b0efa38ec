"""fft_conv (XLA Monarch path, and the Pallas kernel in interpret mode) against the reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from pallas_kernels.fft_conv import BlockSizes, api, fft_conv, fft_conv_reference, monarch
from tests.pallas_kernels.fft_conv.common import assert_close, equations, inputs, numpy_conv

# (N, L, Lk): causal (default N) unless L = N (circular, fft_size=L).
CASES = [
    (256, 128, 128),  # order 2, 16x16, L + Lk - 1 = 255
    (256, 256, 256),  # circular
    (512, 200, 57),  # 16x32, L not a multiple of a row (32): the last row is part-filled
    (1024, 512, 513),  # 32x32, L + Lk - 1 = N
    (1024, 1024, 1024),  # circular
    (2048, 1000, 1000),  # 32x64
    (4096, 2048, 2049),  # order 3, 16^3
    (8192, 4096, 300),  # 16x16x32, short filter
]
XLA_ONLY_CASES = [
    (32768, 32768, 32768),  # circular, 32^3
    (65536, 30000, 20000),  # order 4, 16^4
]


pytestmark = pytest.mark.usefixtures("monarch_everywhere")


def _assert_kernels_match_reference(blocks, n, length, *, batch, heads, backward_blocks=None):
    """Gated causal convolution of length L (default N = n) through the interpreted kernels with
    `blocks` (and `backward_blocks`): y and all four gradients equal the reference's at the f32
    tolerance."""
    u, k, pre, post = inputs(n + batch, batch, heads, length, length, gated=True)
    dy = jnp.asarray(np.random.default_rng(n).standard_normal(u.shape), jnp.float32)

    def ours(u, k, pre, post):
        return fft_conv(
            u, k, pregate=pre, postgate=post, implementation="interpret", block_sizes=blocks,
            backward_block_sizes=backward_blocks,
        )  # fmt: skip

    def ref(u, k, pre, post):
        return fft_conv_reference(u, k, fft_size=n, pregate=pre, postgate=post)

    y, vjp_fn = jax.vjp(jax.jit(ours), u, k, pre, post)
    want_y, want_vjp = jax.vjp(ref, u, k, pre, post)
    assert_close(y, want_y, jnp.float32, "y")
    for name, g, w in zip(("du", "dk", "dpre", "dpost"), vjp_fn(dy), want_vjp(dy), strict=True):
        assert_close(g, w, jnp.float32, name)


def _args(n, length):
    return {"fft_size": n} if n == length else {}


class TestXla:
    IMPLEMENTATION = "xla"
    BATCH, HEADS = 2, 4

    def conv(self, **kwargs):
        return jax.jit(functools.partial(fft_conv, implementation=self.IMPLEMENTATION, **kwargs))

    @pytest.mark.parametrize(("n", "length", "filter_len"), CASES)
    @pytest.mark.parametrize("gated", [False, True])
    def test_forward_f32(self, n, length, filter_len, gated):
        u, k, pre, post = inputs(
            n + length, self.BATCH, self.HEADS, length, filter_len, gated=gated
        )
        y = self.conv(**_args(n, length))(u, k, pregate=pre, postgate=post)
        assert y.shape == u.shape and y.dtype == jnp.float32
        assert_close(y, fft_conv_reference(u, k, fft_size=n, pregate=pre, postgate=post))
        if n <= 1024:  # float64 golden value as well (direct convolution is O(L Lk))
            assert_close(y, numpy_conv(u, k, n, pre, post))

    @pytest.mark.parametrize(("n", "length", "filter_len"), [CASES[0], CASES[4], CASES[6]])
    @pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
    def test_forward_half(self, n, length, filter_len, dtype):
        u, k, pre, post = inputs(1, self.BATCH, self.HEADS, length, filter_len, dtype, gated=True)
        y = self.conv(**_args(n, length))(u, k, pregate=pre, postgate=post)
        assert y.dtype == dtype
        want = fft_conv_reference(u, k, fft_size=n, pregate=pre, postgate=post)
        assert_close(y, want, dtype)

    @pytest.mark.parametrize(
        ("n", "length", "filter_len"), [CASES[0], CASES[2], CASES[4], CASES[6]]
    )
    @pytest.mark.parametrize("gated", [False, True])
    @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
    def test_vjp(self, n, length, filter_len, gated, dtype):
        u, k, pre, post = inputs(7, self.BATCH, self.HEADS, length, filter_len, dtype, gated)
        dy = jnp.asarray(np.random.default_rng(8).standard_normal(u.shape), dtype)
        kwargs = _args(n, length)

        def ours(u, k, pre, post):
            return fft_conv(
                u, k, pregate=pre, postgate=post, implementation=self.IMPLEMENTATION, **kwargs
            )

        def ref(u, k, pre, post):
            return fft_conv_reference(u, k, fft_size=n, pregate=pre, postgate=post)

        y, vjp_fn = jax.vjp(jax.jit(ours), u, k, pre, post)
        want_y, want_vjp = jax.vjp(ref, u, k, pre, post)
        assert_close(y, want_y, dtype, "y")
        grads, want = jax.jit(vjp_fn)(dy), want_vjp(dy)
        for name, g, w in zip(("du", "dk", "dpregate", "dpostgate"), grads, want, strict=True):
            if w is None:
                assert g is None, name
                continue
            assert g.dtype == w.dtype, name
            # dk is f32 but sums B * L products of rounded half-precision inputs; it is still
            # computed in f32 from the same inputs as the reference, so the f32 tolerance holds.
            assert_close(g, w, dtype if name != "dk" else jnp.float32, name)

    @pytest.mark.parametrize("arg", range(4))
    def test_check_grads(self, arg):
        args = list(inputs(9, 1, 2, 100, 100, gated=True))

        def f(x):  # check_grads passes numpy arrays; the annotations ask for jax arrays
            u, k, pre, post = args[:arg] + [jnp.asarray(x)] + args[arg + 1 :]
            return fft_conv(u, k, pregate=pre, postgate=post, implementation=self.IMPLEMENTATION)

        # f is linear in each single argument, so central differences are exact up to f32
        # rounding, which a large step keeps small.
        check_grads(f, (args[arg],), order=1, modes=["rev"], atol=1e-3, rtol=1e-3, eps=1.0)

    def test_causal_by_perturbation(self):
        u, k, pre, post = inputs(10, 1, 2, 300, 300, gated=True)
        conv = self.conv()
        y = conv(u, k, pregate=pre, postgate=post)
        y2 = conv(u.at[:, :, 200:].add(1.0), k, pregate=pre, postgate=post)
        # Through the DFT a perturbation reaches earlier outputs only as f32 rounding noise.
        assert_close(y2[..., :200], y[..., :200])
        assert np.abs(np.asarray(y2 - y)[..., 200:]).max() > 0.1


class TestXlaLarge:
    @pytest.mark.parametrize(("n", "length", "filter_len"), XLA_ONLY_CASES)
    def test_forward_and_vjp(self, n, length, filter_len):
        u, k, pre, post = inputs(11, 1, 2, length, filter_len, gated=True)
        kwargs = _args(n, length)

        @jax.jit
        def ours(u, k, pre, post):
            return fft_conv(u, k, pregate=pre, postgate=post, implementation="xla", **kwargs)

        def ref(u, k, pre, post):
            return fft_conv_reference(u, k, fft_size=n, pregate=pre, postgate=post)

        y, vjp_fn = jax.vjp(ours, u, k, pre, post)
        want_y, want_vjp = jax.vjp(ref, u, k, pre, post)
        assert_close(y, want_y)
        for g, w in zip(vjp_fn(want_y), want_vjp(want_y), strict=True):
            assert_close(g, w)


class TestInterpret(TestXla):
    """The Pallas forward and backward kernels in interpret mode: every TestXla case."""

    IMPLEMENTATION = "interpret"

    @pytest.mark.parametrize(
        "spec",
        [
            "h1b1",  # one program per (row, head): B partial spectra per head
            "h2b2",  # 2 x 2 programs, each adding two rows
            "h4b4",  # one program for everything
            "h16b3",  # rounded down: block_h = gcd(H, 16) = 4, block_b = 2
        ],
    )
    def test_backward_tilings(self, spec):
        """Every backward grid gives the reference's gradients (the partials add up)."""
        # causal L = 200: the default N is 512
        _assert_kernels_match_reference(BlockSizes.parse(spec), 512, 200, batch=4, heads=4)

    @pytest.mark.parametrize(
        ("n", "length", "forward", "backward", "grids"),
        [
            (512, 200, "h1b1", "h4b2m2", [(4, 4), (2, 1)]),  # (B, H / h); (B / b, H / h)
            (1024, 512, "h2m2", "r128h1b4", [(4, 2), (1, 4)]),  # r128 plans 1K as 32 x 32 too
        ],
    )
    def test_separate_backward_tiling(self, n, length, forward, backward, grids):
        """`backward_block_sizes` tiles the backward kernel (its grid says so), the forward keeps
        `block_sizes`, and forward and gradients still equal the reference's."""
        blocks, backward_blocks = BlockSizes.parse(forward), BlockSizes.parse(backward)
        _assert_kernels_match_reference(
            blocks, n, length, batch=4, heads=4, backward_blocks=backward_blocks
        )
        u, k, _, _ = inputs(0, 4, 4, length, length)

        def loss(u, k):
            y = fft_conv(
                u, k, implementation="interpret", block_sizes=forward,
                backward_block_sizes=backward,
            )  # fmt: skip
            return y.sum()

        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(u, k).jaxpr
        launched = [
            e.params["grid_mapping"].grid
            for e in equations(jaxpr)
            if e.primitive.name == "pallas_call"
        ]
        assert launched == grids

    @pytest.mark.parametrize(
        ("n", "spec", "factors"),
        [
            (4096, "r128", (64, 64)),  # order 2 where the default is 16^3
            (8192, "r128h2b1", (64, 128)),
            (16384, "r128w8", (128, 128)),
        ],
    )
    def test_larger_radices(self, n, spec, factors):
        """Kernels on the max_radix plans: forward and every gradient equal the reference."""
        blocks = BlockSizes.parse(spec)
        length = n // 2
        config = api.vjp.ConvConfig(
            fft_size=n, seq_len=length, filter_len=length, implementation="interpret",
            block_sizes=blocks,
        )  # fmt: skip
        assert config.plan.factors == factors
        _assert_kernels_match_reference(blocks, n, length, batch=2, heads=2)

    @pytest.mark.parametrize("n", [16384, 32768])
    def test_largest_sizes_on_their_default_plans(self, n):
        """16K and 32K (order 3, 16 x 32 x 32 and 32^3), past CASES: forward and every gradient
        equal the reference's."""
        _assert_kernels_match_reference(None, n, n // 2, batch=1, heads=2)

    @pytest.mark.parametrize(
        ("n", "length", "spec"),
        [
            (512, 200, "h4b2m2"),  # two groups of two heads per program
            (1024, 512, "h4m4"),  # one group of every head
            (4096, 2048, "h4b1m4"),  # order 3 (16^3): stacked heads around the middle level
            (4096, 2048, "r128h4m2"),  # order 2, 64 x 64
            (8192, 4096, "h8m3"),  # rounded down: 2 heads per dot (block_h = gcd(H, 8) = 4)
        ],
    )
    def test_heads_per_dot(self, n, length, spec):
        """Heads transformed together by taller matmuls: the reference's forward and gradients."""
        _assert_kernels_match_reference(BlockSizes.parse(spec), n, length, batch=2, heads=4)

    @pytest.mark.parametrize("dot", ["bf16", "bf16x3"])
    def test_dot_arithmetic_reaches_every_kernel_matmul(self, dot):
        """Traced for a GPU, the kernels' dots carry BlockSizes.dot's algorithm (XLA:CPU would
        ignore it: on CPU the rounding is spelled out instead, next test)."""
        from pallas_kernels import platform

        u, k, pre, post = inputs(16, 1, 2, 300, 300, gated=True)
        blocks = BlockSizes(dot=dot)

        def loss(u, k, pre, post):
            y = fft_conv(
                u, k, pregate=pre, postgate=post, implementation="interpret", block_sizes=blocks
            )
            return y.sum()

        with platform.compiling_for("gpu"):
            jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2, 3)))(u, k, pre, post).jaxpr
        kernels = [e.params["jaxpr"] for e in equations(jaxpr) if e.primitive.name == "pallas_call"]
        assert len(kernels) == 2  # forward, backward
        for body in kernels:
            precisions = [
                e.params["precision"] for e in equations(body) if e.primitive.name == "dot_general"
            ]
            assert precisions and all(p == monarch.DOT_PRECISIONS[dot] for p in precisions), (
                precisions
            )

    @pytest.mark.parametrize(
        ("dot", "low", "high"),
        [("bf16", 1e-3, 1e-2), ("bf16x3", 2e-6, 1e-3), ("f32", 0.0, 1e-6)],
    )
    def test_interpret_mode_has_the_dot_arithmetics_error(self, dot, low, high):
        """On CPU the bf16 kinds round their operands as the GPU's do (XLA:CPU alone would compute
        them in f32): relative error of y and du against the f32 reference between `low` and
        `high` — about 4e-3 for bf16 at N = 1K, as an H200 measured (README, GPU 2026-11-28)."""
        u, k, _, _ = inputs(17, 2, 4, 1024, 512)
        dy = jax.random.normal(jax.random.key(3), u.shape)

        def errors(fn):
            y, vjp = jax.vjp(lambda u: fn(u, k), u)
            return y, vjp(dy)[0]

        got = errors(
            lambda u, k: fft_conv(
                u, k, fft_size=1024, implementation="interpret", block_sizes=BlockSizes(dot=dot)
            )
        )
        want = errors(lambda u, k: fft_conv_reference(u, k, fft_size=1024))
        for g, w in zip(got, want, strict=True):
            rel = float(jnp.linalg.norm(g - w) / jnp.linalg.norm(w))
            assert low <= rel <= high, (dot, rel)
