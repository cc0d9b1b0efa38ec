"""The GPU diagnosis tool: clean in interpret mode, and it localizes planted faults."""

import json

import jax
import numpy as np
import pytest
from jax.experimental import io_callback

from pallas_kernels.rational import diagnose, kernel


def test_interpret_mode_is_clean(tmp_path):
    out = tmp_path / "diag.json"
    args = ["--tilings", "16x64", "32x64l8-loop", "--rows", "40", "--width", "64"]
    assert diagnose.main([*args, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["tiling"], r["rows"]) for r in rows] == [("16x64", 40), ("32x64l8-loop", 40)]
    for r in rows:
        assert r["ok"] and r["dx_rel_err"] < 1e-6 and r["sums_rel_err"] < 1e-6
        assert r["last_tile_rows"] == 40 % r["block_rows"] and all(r["bitwise_rerun"].values())
        assert max(r["whole_backward_vs_raw"].values()) < 1e-6


def test_planted_faults_are_localized(monkeypatch):
    """dx wrong in the last (partial) tile, one tile's sums never written, a rerun that differs."""
    real = kernel.rational_bwd_tiles
    runs = iter(range(1, 10))

    def faulty(*args, **kwargs):
        dx, pa, pb = real(*args, **kwargs)
        # A different value on each execution of the compiled function, as a race would give.
        run = io_callback(lambda: np.float32(next(runs)), jax.ShapeDtypeStruct((), np.float32))
        dx = dx.at[-3:].multiply(2.0)  # rows 37..39 of 40: in the last 16-row tile (rows 32..39)
        pa = pa.at[1, :, 64:128].set(0.0)  # tile 1, second column block: never written
        pb = pb.at[1, :, 64:128].set(0.0)
        pb = pb.at[0, 0, 0].add(run)  # differs between the two runs
        return dx, pa, pb

    monkeypatch.setattr(kernel, "rational_bwd_tiles", faulty)
    r = diagnose.diagnose("16x64", 40, width=192)
    assert not r["ok"]
    assert r["dx_bad_rows"] == 3 and r["dx_bad_only_in_last_tile"] and r["dx_bad_row_tiles"] == [2]
    assert r["sum_slots"] == 9 and r["sum_slots_bad"] == 2  # tile 1 col block 1, tile 0 block 0
    assert r["sum_slots_bad_all_zero"] == 1 and r["sum_bad_tiles"] == [0, 1]
    assert r["bitwise_rerun"] == {"dx": True, "sums_a": True, "sums_b": False}
    line = diagnose._line(r)
    assert line.startswith("FAIL") and "(last tile only)" in line and "differs: sums_b" in line


def test_bad_arguments():
    for bad in (["--tilings", "256x64-sum"], ["--width", "12"], ["--rows", "0"]):
        with pytest.raises(SystemExit):
            diagnose.main(bad)
    # Refused before the kernel runs (it was a KeyError after).
    with pytest.raises(ValueError, match=r"diagnose.dtype='float16': must be one of \['bfloat16'"):
        diagnose.diagnose("32x64l32", 8, dtype="float16")


def test_truth_is_float64():
    x = np.linspace(-3, 3, 8 * 16, dtype=np.float32).reshape(8, 16)
    a = np.ones((8, 16), np.float32)
    b = np.full((4, 16), 0.5, np.float32)
    dx, sums, magnitude = diagnose._truth(x, np.ones_like(x), a, b, block_rows=4)
    assert (
        dx.dtype == np.float64 and sums.shape == (2, 10, 16) and np.all(magnitude >= np.abs(sums))
    )


def test_fault_outside_the_kernel(monkeypatch):
    """Raw outputs right, the reduction after them wrong: only the whole-backward check fails."""
    real = kernel.pairwise_sum
    monkeypatch.setattr(kernel, "pairwise_sum", lambda parts: 1.5 * real(parts))
    r = diagnose.diagnose("16x64", 40, width=64)
    assert r["dx_bad_rows"] == 0 and r["sum_slots_bad"] == 0 and all(r["bitwise_rerun"].values())
    assert r["whole_backward_vs_raw"]["dx"] < 1e-6 and r["whole_backward_vs_raw"]["sums"] > 0.3
    assert not r["ok"]
