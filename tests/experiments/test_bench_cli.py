"""Tests of `python -m experiments.bench`: listing, errors, the lowformer spec end to end."""

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from efficient.bench import BenchResult, environment, synthetic_variables
from experiments import bench
from experiments.benches import BENCHES, BenchArgs, resolve_models
from experiments.benches import lowformer as lowformer_bench

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_lowformer = pytest.mark.skipif(
    not _has("efficient.models.lowformer"), reason="efficient.models.lowformer is not written yet"
)


def test_list_names_every_bench_with_its_description():
    proc = _cli("--list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(BENCHES)
    for name, spec in BENCHES.items():
        assert any(line.split()[0] == name and spec.description in line for line in lines)


def test_unknown_name_is_one_line_with_a_suggestion_and_exit_2():
    proc = _cli("lowfromer")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "did you mean lowformer" in proc.stderr


def test_unknown_model_exits_2_without_running():
    assert bench.main(["lowformer", "--models", "b0,b2"]) == 2


def test_bad_option_exits_2():
    with pytest.raises(SystemExit) as exc:
        bench.main(["lowformer", "--batch", "0"])
    assert exc.value.code == 2


def test_resolve_models_accepts_paper_spellings():
    spec = BENCHES["lowformer"]
    assert resolve_models(spec, ["B1.5", "DeiT-Tiny", "b0"]) == ("b15", "deit_tiny", "b0")
    assert resolve_models(spec, None) == spec.models
    with pytest.raises(ValueError, match="did you mean"):
        resolve_models(spec, ["b4"])


def _fake(model: str, macs: float, img_s: float, mode: str = "throughput") -> BenchResult:
    batch = 10 if mode == "throughput" else 1
    extra = {**_META, "model": model, "label": model.upper(), "paper_macs_m": macs, "mode": mode}
    return BenchResult(
        name=f"lowformer/{model}/{mode}",
        batch=batch,
        flops=2e6 * macs * batch,
        times_ms=(batch / img_s * 1e3,),
        env=environment(),
        extra=extra,
    )


_META = {
    "bench": "lowformer",
    "image_size": 224,
    "params_m": 1.0,
    "paper_throughput": None,
    "paper_latency_ms": None,
}


def test_report_ranks_macs_against_speed_and_saves_a_figure(tmp_path, capsys):
    # "b" has more MACs than "a" but is faster: one inversion. MAC ranks (1, 2, 3) vs speed ranks
    # (2, 3, 1): rho = 1 - 6 * (1 + 1 + 4) / (3 * (9 - 1)) = -0.5.
    results = [_fake("a", 100, 50), _fake("b", 200, 80), _fake("c", 300, 10)]
    results.append(_fake("a", 100, 9, mode="latency"))
    out = tmp_path / "lf.jsonl"
    lowformer_bench.report(results, BenchArgs(out=out))
    text = capsys.readouterr().out
    assert "rho(paper MACs, img/s) = -0.500" in text
    assert "inverted: B has more MACs" in text and text.count("inverted:") == 1
    assert (tmp_path / "lf.png").stat().st_size > 0


@needs_lowformer
def test_synthetic_weights_give_finite_varied_logits():
    from efficient.models.lowformer import LowFormer, LowFormerConfig

    module = LowFormer(dataclasses.replace(LowFormerConfig.smoke(), fold_bn=True))
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    shapes = jax.eval_shape(lambda k: module.init(k, x, train=False), jax.random.key(0))
    variables = synthetic_variables(shapes)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == jax.tree.map(
        lambda s: (s.shape, s.dtype), shapes
    )
    logits = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
    assert np.isfinite(logits).all()
    assert logits.std() > 1e-3 and np.abs(logits).max() < 1e4


@needs_lowformer
def test_lowformer_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "lowformer.jsonl"
    argv = ["lowformer", "--models", "b0", "--batch", "2", "--image-size", "64"]
    argv += ["--repeats", "2", "--warmup", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["lowformer/b0/throughput", "lowformer/b0/latency"]
    thr, lat = (BenchResult.from_dict(r) for r in rows)
    assert (thr.batch, lat.batch) == (2, 1) and thr.repeats == lat.repeats == 2
    assert thr.extra["paper_macs_m"] == 944 and thr.extra["paper_throughput"] == 5988
    assert thr.extra["params_m"] == pytest.approx(14.1, abs=0.1)
    # XLA's per-image count does not depend on the batch (same graph, batch-parallel).
    assert thr.flops_per_item == pytest.approx(lat.flops_per_item, rel=1e-3)
    assert thr.items_per_s == pytest.approx(2 / (thr.median_ms / 1e3))
    text = capsys.readouterr().out
    assert "LowFormer-B0" in text and "944" in text
    argv[2] = "b0,deit_tiny"
    assert bench.main([*argv, "--lower-only"]) == 0
    lowered = [BenchResult.from_dict(json.loads(x)) for x in out.read_text().splitlines()[2:]]
    assert [r.name for r in lowered] == [
        "lowformer/b0/throughput",
        "lowformer/b0/latency",
        "lowformer/deit_tiny/throughput",
        "lowformer/deit_tiny/latency",
    ]
    assert all(r.lower_only and r.times_ms == () and r.flops > 0 for r in lowered)
    assert lowered[0].flops == thr.flops  # the same executable, compiled again
    # DeiT-Ti has 5,717,416 parameters at 224 px; at 64 px its position table has 17, not 197, rows.
    assert lowered[2].extra["params_m"] == pytest.approx((5_717_416 - 180 * 192) / 1e6)


def test_registry_specs_are_complete():
    for name, spec in BENCHES.items():
        assert spec.description and "\n" not in spec.description, name
        assert callable(spec.run)
    assert set(lowformer_bench.MODELS) == set(BENCHES["lowformer"].models)
