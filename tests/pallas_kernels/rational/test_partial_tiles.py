"""A partial last row tile (R not a multiple of block_rows) on GPU: every row access masked.

jax 0.11's Pallas-Triton lowering puts no bounds mask on block loads and stores (0.12's does), so
a tile that runs past R read and wrote past the arrays' ends: the H200 check's wrong,
nondeterministic gradients (README, GPU). The kernels now mask each row access themselves on GPU.
Two checks from this CPU machine: the kernels traced for GPU contain no unmasked access to a
row-tiled block (a property of our code, whatever the installed jax's lowering adds), and that
spelling, run in interpret mode, matches the reference.
"""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax import tree_util

from pallas_kernels import platform
from pallas_kernels.rational import BlockSizes, group_rational_reference
from pallas_kernels.rational import kernel as rational_kernel
from tests.pallas_kernels.rational.common import f64, inputs

_ACCESSES = {"get", "swap", "masked_load", "masked_swap"}


def _subjaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def _row_accesses(jaxpr, block_shape):
    """(primitive name, masked?) of every load/store of a [block_rows, bd] ref, at any depth."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _ACCESSES and eqn.invars[0].aval.shape == block_shape:
            masked = False
            if eqn.primitive.name.startswith("masked_"):
                args = tree_util.tree_unflatten(eqn.params["args_tree"], eqn.invars)
                masked = args[2 if eqn.primitive.name == "masked_load" else 3] is not None
            found.append((eqn.primitive.name, masked))
        for sub in _subjaxprs(eqn.params):
            found += _row_accesses(sub, block_shape)
    return found


def _pallas_jaxprs(jaxpr):
    """The kernel jaxprs of every pallas_call, at any depth (they sit inside the partitioning
    rule's custom_vmap and custom_partitioning calls)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            found.append(eqn.params["jaxpr"])
        else:
            for sub in _subjaxprs(eqn.params):
                found += _pallas_jaxprs(sub)
    return found


def _kernel_jaxprs(fn, *args):
    return _pallas_jaxprs(jax.make_jaxpr(fn)(*args).jaxpr)


def _fwd_bwd(blocks, interpret):
    def run(x, dy, num, den):
        y = rational_kernel.rational_fwd(x, num, den, block_sizes=blocks, interpret=interpret)
        grads = rational_kernel.rational_bwd(
            x, dy, num, den, block_sizes=blocks, interpret=interpret
        )
        return y, grads

    return run


# After "32x<block_d>": the unrolled tree; the loops (backward leaves, forward steps of 8 rows);
# the same loops prefetching; and two steps per iteration, prefetching.
_SPELLINGS = ["l8", "l8f8-loop", "l8f8p1-loop", "l8f8u2p1-loop"]


@pytest.mark.parametrize("spelling", _SPELLINGS)
@pytest.mark.parametrize(("rows", "partial"), [(40, True), (64, False)])
def test_gpu_trace_masks_every_row_access(spelling, rows, partial):
    blocks = BlockSizes.parse(f"32x32{spelling}")
    x, dy, num, den = inputs(0, (rows, 64), 4)
    with platform.compiling_for("gpu"):
        jaxprs = _kernel_jaxprs(_fwd_bwd(blocks, interpret=False), x, dy, num, den)
    assert len(jaxprs) == 2  # forward, backward
    for jaxpr in jaxprs:
        accesses = _row_accesses(jaxpr, (32, 32))
        assert accesses, "no access to the row-tiled blocks found: the walker is out of date"
        if partial:
            assert all(masked for _, masked in accesses), accesses
        else:  # full tiles: plain indexing, nothing to mask
            assert not any(masked for _, masked in accesses), accesses


def test_tpu_and_interpret_traces_use_plain_indexing():
    """Mosaic clips partial blocks itself and has no masked loads; interpret mode pads with NaN
    (the kernels zero those rows instead)."""
    blocks = BlockSizes(block_rows=32, block_d=128)
    x, dy, num, den = inputs(0, (40, 128), 4)
    for name in ("tpu", "cpu"):
        with platform.compiling_for(name):
            jaxprs = _kernel_jaxprs(_fwd_bwd(blocks, interpret=name == "cpu"), x, dy, num, den)
        for jaxpr in jaxprs:
            accesses = _row_accesses(jaxpr, (32, 128))
            assert accesses and not any(name.startswith("masked") for name, _ in accesses)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("spelling", _SPELLINGS)
def test_gpu_spelling_matches_reference_in_interpret_mode(spelling, dtype):
    """The masked GPU kernels, interpreted: y, dx and the per-group sums of a partial tile."""
    blocks = BlockSizes.parse(f"32x16{spelling}")
    x, dy, num, den = inputs(3, (3, 25, 32), 4, shared=False, dtype=dtype)  # 75 rows: 32+32+11
    with platform.compiling_for("gpu"):
        y, (dx, sum_a, sum_b) = jax.jit(_fwd_bwd(blocks, interpret=True))(x, dy, num, den)
    tol = 1e-6 if dtype == jnp.float32 else 2.0**-7
    want_y = group_rational_reference(x, num, den)
    np.testing.assert_allclose(f64(y), f64(want_y), rtol=tol, atol=tol * np.abs(f64(want_y)).max())

    def loss(x, num, den):
        return jnp.sum(
            group_rational_reference(x, num, den).astype(jnp.float32) * dy.astype(jnp.float32)
        )

    want_dx, want_a, want_b = jax.grad(loss, argnums=(0, 1, 2))(x, num, den)
    np.testing.assert_allclose(
        f64(dx), f64(want_dx), rtol=tol, atol=tol * np.abs(f64(want_dx)).max()
    )
    # rational_bwd returns raw sums: sign(b) and the shared-numerator sum are the VJP's.
    np.testing.assert_allclose(f64(sum_a), f64(want_a), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f64(sum_b) * np.sign(f64(den)), f64(want_b), rtol=1e-4, atol=1e-4)
