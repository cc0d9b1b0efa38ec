"""The kernel benchmarks run end to end in quick mode and write JSON with provenance."""

import json

import pytest

from pallas_kernels.fft_conv import bench as fft_conv_bench
from pallas_kernels.rational import bench as rational_bench


@pytest.mark.parametrize("bench", [fft_conv_bench, rational_bench], ids=["fft_conv", "rational"])
def test_quick_bench_writes_results(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--section", "cpu", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["env"]["platform"] == "cpu" and report["env"]["jax_version"]
    rows = report["results"]
    assert rows and all(r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] for r in rows)
