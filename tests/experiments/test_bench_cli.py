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
from experiments.benches import transformer as transformer_bench

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


needs_transformer = pytest.mark.skipif(
    not _has("efficient.models.transformer"),
    reason="efficient.models.transformer is not written yet",
)
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


@needs_transformer
def test_transformer_bench_quick_mode(tmp_path, capsys):
    out = tmp_path / "transformer.jsonl"
    argv = ["transformer", "--models", "smoke,qwen2_7b", "--repeats", "2", "--warmup", "1"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    rows = {r.name: r for r in map(BenchResult.from_dict, map(json.loads, out.open()))}
    assert list(rows) == [
        "transformer/smoke/train",
        "transformer/smoke/prefill_b1",
        "transformer/smoke/decode_b1",
        "transformer/smoke/prefill_b8",
        "transformer/smoke/decode_b8",
        "transformer/qwen2_7b/train",
        "transformer/qwen2_7b/forward",
    ]
    train = rows["transformer/smoke/train"]
    assert train.batch == 8 * 128 and train.repeats == 2 and not train.lower_only
    assert train.items_per_s == pytest.approx(8 * 128 / (train.median_ms / 1e3))
    # XLA counts at least the 6 FLOPs per non-embedding parameter and token of forward + backward
    # (0.8 leaves room for XLA's conventions), and 6NT leaves out the head matmul (+22% at
    # D 64, V 256), attention (12·L·H·K·T/6N = +44% at T 128) and the elementwise work, which
    # together stay well under 3x. The PaLM-style estimate, which counts head and attention,
    # leaves only the elementwise work (norms, softmax, SwiGLU, loss, AdamW): a few percent.
    est = train.extra["estimates"]
    assert 0.8 < train.flops / est["6NT"] < 3
    assert 1.0 < train.flops / est["model"] < 1.3
    decode = rows["transformer/smoke/decode_b8"]
    assert decode.batch == 8 * 16 and decode.extra["new_tokens"] == 16
    assert rows["transformer/smoke/prefill_b1"].batch == 16  # prompt tokens
    # Qwen2-7B is lowered on shapes only: no weights, no compile, no run.
    for step in ("train", "forward"):
        r = rows[f"transformer/qwen2_7b/{step}"]
        assert r.lower_only and r.times_ms == () and r.compile_s == 0.0
        assert r.extra["params"] == 7_615_616_512 and r.extra["dtype"] == "bfloat16"
        assert (r.extra["batch_size"], r.extra["seq_len"]) == (1, 4096)
    forward = rows["transformer/qwen2_7b/forward"]
    # 2·N·T with every parameter; attention (4·L·H·K·T per token) adds ~6% at T 4096.
    two_nt = 2 * 7_615_616_512 * 4096
    assert 0.9 < forward.flops / two_nt < 1.3
    assert rows["transformer/qwen2_7b/train"].flops / forward.flops == pytest.approx(3, rel=0.05)
    text = capsys.readouterr().out
    assert "XLA/6NT" in text and "Qwen2-7B forward" in text and "new tokens/s" in text


def test_transformer_flop_estimates_follow_the_formulas():
    from efficient.models.transformer import TransformerConfig

    c = TransformerConfig.smoke()  # L 2, H 4, K 16, D 64, V 256
    n = c.num_non_embedding_params()
    train = transformer_bench.flop_estimates(c, 2, 128, train=True)
    assert train["6NT"] == 6 * n * 256
    assert train["6NT_all"] == 6 * c.num_params() * 256
    assert train["model"] == (6 * (n + 64 * 256) + 12 * 2 * 4 * 16 * 128) * 256
    forward = transformer_bench.flop_estimates(c, 2, 128, train=False)
    assert all(forward[k] * 3 == train[k] for k in train)


def test_transformer_entries_refuse_an_unknown_analysis():
    with pytest.raises(ValueError, match="analysis='run': expected one of 'timed'"):
        transformer_bench.ModelEntry(label="x", preset="smoke", batch=1, seq_len=8, analysis="run")


def test_registry_specs_are_complete():
    for name, spec in BENCHES.items():
        assert spec.description and "\n" not in spec.description, name
        assert callable(spec.run)
    assert set(lowformer_bench.MODELS) == set(BENCHES["lowformer"].models)
    assert set(transformer_bench.MODELS) == set(BENCHES["transformer"].models)
