"""The offline register report: Triton IR captured for a GPU, ptxas output parsed.

Compiling the IR needs the `triton` package, which is not a dependency: that part runs only where
it is importable.
"""

import importlib.util
import json
import sys

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import registers
from pallas_kernels.rational import BlockSizes, group_rational, init_coefficients
from tests.pallas_kernels.conftest import TRITON_DEPRECATION

# `ptxas -v` for one of the kernels (triton 3.5.0's ptxas, CUDA 12.8, sm_90a).
PTXAS = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'group_rational_bwd' for 'sm_90a'
ptxas info    : Function properties for group_rational_bwd
    2304 bytes stack frame, 5056 bytes spill stores, 5056 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 2304 bytes cumulative stack size
"""


def test_parse_ptxas():
    assert registers.parse_ptxas(PTXAS) == {
        "stack_frame": 2304,
        "spill_stores": 5056,
        "spill_loads": 5056,
        "registers": 168,
        "barriers": 1,
    }
    assert registers.parse_ptxas("nothing")["registers"] is None


def test_ptx_loads_counts_copies_not_their_bookkeeping():
    ptx = """
    ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    @%p1 ld.global.b32 { %r5 }, [ %rd2 + 0 ];
    ld.shared.b32 %r6, [ %r7 ];
    cp.async.cg.shared.global [ %r8 + 0 ], [ %rd3 + 0 ], 0x10, %r9;
    cp.async.ca.shared.global [ %r10 + 0 ], [ %rd4 + 0 ], 0x4;
    cp.async.commit_group;
    cp.async.wait_group 0x1;
    cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [ %r11 ], [ %rd5 ];
    cp.async.bulk.commit_group;
    cp.async.mbarrier.arrive.noinc.shared.b64 [ %r12 ];
    """
    assert registers.ptx_loads(ptx) == {"global_loads": 2, "cp_async": 3}
    assert registers.ptx_loads("") == {"global_loads": 0, "cp_async": 0}


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
def test_triton_modules_of_forward_and_backward():
    numerator, denominator = init_coefficients("swish", 8)
    blocks = BlockSizes(block_rows=32, block_d=32)

    def loss(x, numerator, denominator):
        y = group_rational(x, numerator, denominator, implementation="pallas", block_sizes=blocks)
        return y.astype(jnp.float32).sum()

    x = jax.ShapeDtypeStruct((40, 64), jnp.float32)
    modules = registers.triton_modules(
        jax.value_and_grad(loss, argnums=(0, 1, 2)), x, numerator, denominator
    )
    names = [registers._kernel_name(m) for m in modules]
    assert names == ["group_rational_fwd", "group_rational_bwd"]
    assert all("tt.store" in m and "tt.get_program_id" in m for m in modules)


def test_without_triton_says_how_to_get_it(capsys):
    with pytest.raises(SystemExit):
        registers.main(["--rational", "default", "--triton-python", "/nonexistent/python"])
    assert "cannot import triton (pip install triton" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing asked for
        registers.main([])
    with pytest.raises(SystemExit):  # a bad spec is a usage error
        registers.main(["--rational", "256x64q3"])


@pytest.mark.filterwarnings(TRITON_DEPRECATION)
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_report_with_triton(tmp_path):
    out = tmp_path / "registers.json"
    args = ["--rational", "32x64l32", "--triton-python", sys.executable, "--out", str(out)]
    assert registers.main(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["kernel"] for r in rows] == ["group_rational_fwd", "group_rational_bwd"]
    assert all(r["registers"] and r["registers"] <= 255 for r in rows)
    assert all(r["global_loads"] > 0 and r["cp_async"] >= 0 for r in rows)
