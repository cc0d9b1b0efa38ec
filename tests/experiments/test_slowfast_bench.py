"""The slowfast bench: entries, the analytic prefill FLOPs against hand counts and XLA's count,
the increase over the 16-frame base and the claim, and a quick run. Nothing here asserts a time."""

import json

import pytest

from efficient.bench import BenchResult, environment
from efficient.models.slowfast_mllm import SlowFastConfig
from experiments import bench
from experiments.benches import BENCHES, BenchArgs
from experiments.benches import slowfast as sf_bench

QUICK_PREFILL = tuple(k for k in sf_bench.QUICK_MODELS if k.startswith("quick_prefill"))


def _rows(path):
    return [BenchResult.from_dict(json.loads(line)) for line in path.open()]


def test_entries_are_the_papers_rows():
    assert set(sf_bench.MODELS) == set(BENCHES["slowfast"].models)
    assert not any(k.startswith("quick_") for k in sf_bench.DEFAULT_MODELS)
    counts = {}
    for key, entry in sf_bench.MODELS.items():
        if key.startswith("prefill_"):
            c = sf_bench.slowfast_config(entry.preset, entry.frames, entry.mode)
            S = c.num_slow_tokens if c.hybrid else 0
            counts[key] = (c.num_fast_tokens, S, c.hybrid_layers, c.llm.num_layers)
    assert counts == {
        "prefill_16f_fast_only": (1296, 0, (), 28),
        "prefill_64f_slowfast": (1296, 5184, (0, 8, 16, 24), 28),
        "prefill_96f_slowfast": (1296, 7776, (0, 8, 16, 24), 28),
        "prefill_128f_slowfast": (1296, 10368, (0, 8, 16, 24), 28),
        "prefill_64f_all_fast": (5184, 0, (), 28),
        "prefill_128f_all_fast": (10368, 0, (), 28),
    }
    train = {(e.frames, e.mode, e.batch) for k, e in sf_bench.MODELS.items() if k[:6] == "train_"}
    assert train == {(16, "fast_only", 8), (64, "slowfast", 8), (128, "slowfast", 8),
                     (128, "all_fast", 8)}  # fmt: skip


def test_prefill_flops_against_hand_counts_at_7b():
    base = SlowFastConfig.qwen2_7b(16, hybrid=False)
    ours = SlowFastConfig.qwen2_7b(128)
    c = base.llm
    D, V, L, T = 3584, 152_064, 128, 1296 + 128
    # Dense work = 2 FLOPs per token per weight of the 28 layers' matrices: the non-embedding
    # parameters less the q/k/v biases, the two norms per layer and the final norm.
    matrices = c.num_non_embedding_params() - 28 * (3584 + 2 * 512 + 2 * D) - D
    f = sf_bench.prefill_flops(base, text_len=L)
    assert f["dense"] == 2 * matrices * T
    assert f["attention"] == 28 * 2 * 2 * T * T * 3584  # QKᵀ and AV, H·K = 3584
    assert f["head"] == 2 * L * D * V
    assert f["kv"] == f["cross"] == f["gate"] == 0
    assert f == sf_bench.prefill_flops(base, text_len=L, queries="text")
    # The hybrid layers' extra work, as the reference estimates it: 4 layers x K_s, V_s over
    # 10368 slow tokens (4 KV heads of 128), and the text queries' attention to them.
    text = sf_bench.prefill_flops(ours, text_len=L, queries="text")
    every = sf_bench.prefill_flops(ours, text_len=L, queries="all")
    assert text["kv"] == every["kv"] == 4 * 2 * 10368 * D * 1024
    assert text["cross"] == 4 * 2 * 2 * L * 10368 * 3584
    assert every["cross"] == text["cross"] * T / L
    assert {k: text[k] for k in ("dense", "attention", "head")} == {
        k: f[k] for k in ("dense", "attention", "head")
    }
    # The reference's estimate: ≈ 0.30 TFLOP of KV projection on a ≈ 19-20 TFLOP prefill, ≈ 2%.
    assert 0.30e12 < text["kv"] < 0.31e12 and 19e12 < f["total"] < 20e12
    assert 0.015 < text["total"] / f["total"] - 1 < 0.025
    with pytest.raises(ValueError, match="queries"):
        sf_bench.prefill_flops(ours, text_len=L, queries="visual")


def test_quick_prefill_matches_xla_and_computes_the_increase(tmp_path, capsys):
    out = tmp_path / "slowfast.jsonl"
    args = ["slowfast", "--models", ",".join(QUICK_PREFILL), "--text-len", "32"]
    assert bench.main([*args, "--out", str(out)]) == 0
    results = _rows(out)
    by_mode = {r.extra["mode"]: r for r in results}
    assert set(by_mode) == {"fast_only", "slowfast", "all_fast"}
    assert all(r.lower_only and r.times_ms == () and r.extra["text_len"] == 32 for r in results)
    for r in results:
        c = sf_bench.slowfast_config("video_qa", r.extra["frames"], r.extra["mode"])
        assert r.extra["analytic_all"] == sf_bench.prefill_flops(c, text_len=32)
        # The hybrid layers compute only the text part's queries (`cross_from`): XLA counts the
        # text-query form plus the elementwise work (softmax, norms, RoPE, gate), a few % here.
        analytic = sf_bench.prefill_flops(c, text_len=32, queries="text")
        assert r.extra["analytic_text"] == analytic
        assert analytic["total"] <= r.flops <= 1.05 * analytic["total"]
    # The hybrid layers' extra work alone (same fast tokens, same text): XLA's difference against
    # kv + cross + gate; softmax over the Q x S scores and the slow tokens' RMSNorm on top.
    fast, slow = by_mode["fast_only"], by_mode["slowfast"]
    assert fast.extra["fast_tokens"] == slow.extra["fast_tokens"] == 64
    extra = sum(slow.extra["analytic_text"][k] for k in ("kv", "cross", "gate"))
    assert extra <= slow.flops - fast.flops <= 1.1 * extra
    rows = {r["mode"]: r for r in sf_bench.prefill_rows(results)}
    for mode, r in rows.items():
        assert r["xla_increase"] == pytest.approx(by_mode[mode].flops / fast.flops - 1, rel=1e-12)
        total = by_mode[mode].extra["analytic_text"]["total"]
        base = fast.extra["analytic_text"]["total"]
        assert r["analytic_text_increase"] == pytest.approx(total / base - 1, rel=1e-12)
    assert rows["fast_only"]["xla_increase"] == 0
    assert rows["all_fast"]["xla_increase"] > rows["slowfast"]["xla_increase"] > 0
    # Text-only queries cost less than every position querying.
    assert rows["slowfast"]["analytic_text_increase"] < rows["slowfast"]["analytic_all_increase"]
    assert sf_bench.claim(list(rows.values())) is None  # no Qwen2-7B rows
    assert "LLM prefill FLOPs and memory" in capsys.readouterr().out


def _fake_prefill(frames: int, mode: str, flops: float) -> BenchResult:
    config = sf_bench.slowfast_config("qwen2_7b", frames, mode)
    extra = {
        "bench": "slowfast", "part": "prefill", "model": f"prefill_{frames}f_{mode}",
        "preset": "qwen2_7b", "frames": frames, "mode": mode,
        "fast_tokens": config.num_fast_tokens, "text_len": 128,
        "slow_tokens": config.num_slow_tokens if config.hybrid else 0,
        "analytic_all": sf_bench.prefill_flops(config, text_len=128, queries="all"),
        "analytic_text": sf_bench.prefill_flops(config, text_len=128, queries="text"),
    }  # fmt: skip
    return BenchResult(name=extra["model"], flops=flops, lower_only=True, env=environment(),
                       extra=extra)  # fmt: skip


@pytest.mark.parametrize("increase, within", [(0.035, True), (0.0201, True), (0.0411, False)])
def test_claim_is_the_128_frame_increase_within_one_point(increase, within):
    results = [
        _fake_prefill(16, "fast_only", 1e13),
        _fake_prefill(128, "all_fast", 9e13),
        _fake_prefill(128, "slowfast", 1e13 * (1 + increase)),
    ]
    c = sf_bench.claim(sf_bench.prefill_rows(results))
    assert c["xla"] == pytest.approx(increase, rel=1e-9) and c["xla_within"] is within
    # The analytic figures at 7B: text-only queries ≈ 1.95% (just outside 2-4%), every position
    # querying ≈ 5.9%.
    assert 0.018 < c["analytic_text"] < 0.021 and not c["analytic_text_within"]
    assert 0.055 < c["analytic_all"] < 0.062 and not c["analytic_all_within"]
    # Without the base row there is no claim.
    assert sf_bench.claim(sf_bench.prefill_rows(results[1:])) is None
    with pytest.raises(ValueError, match=r"preset='qwen2-7b': must be one of \['qwen2_7b', 'video"):
        sf_bench.claim(sf_bench.prefill_rows(results), "qwen2-7b")


def test_quick_train_steps_are_timed(tmp_path, capsys):
    out = tmp_path / "slowfast.jsonl"
    models = ",".join(k for k in sf_bench.QUICK_MODELS if k.startswith("quick_train"))
    args = ["slowfast", "--models", models, "--repeats", "2", "--warmup", "0", "--out", str(out)]
    assert bench.main(args) == 0
    rows = {r.extra["mode"]: r for r in _rows(out)}
    assert set(rows) == {"fast_only", "slowfast"}
    for r in rows.values():
        assert len(r.times_ms) == 2 and r.batch == 2 and r.flops > 0 and r.env.git_commit != ""
    assert (
        rows["slowfast"].extra["slow_tokens"] == 32 and rows["fast_only"].extra["slow_tokens"] == 0
    )
    # The hybrid layer's cross-attention (forward and backward) adds work.
    assert rows["slowfast"].flops > rows["fast_only"].flops
    assert "train step (fwd + bwd + AdamW)" in capsys.readouterr().out


def test_text_len_is_checked():
    with pytest.raises(SystemExit):
        bench.main(["slowfast", "--text-len", "0"])
    with pytest.raises(ValueError, match="text_len=0"):
        next(sf_bench.run(BenchArgs(text_len=0)))


def test_entries_refuse_an_unknown_mode_or_preset():
    with pytest.raises(ValueError, match="mode='slow': expected one of 'fast_only'"):
        sf_bench.PrefillEntry(frames=16, mode="slow")
    with pytest.raises(ValueError, match="preset='smoke': expected one of 'qwen2_7b'"):
        sf_bench.PrefillEntry(frames=8, mode="slowfast", preset="smoke")
    with pytest.raises(ValueError, match="preset='qwen2_7b': expected one of 'video_qa'"):
        sf_bench.TrainEntry(frames=16, mode="slowfast", preset="qwen2_7b")
