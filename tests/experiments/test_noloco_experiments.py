"""The NoLoCo / DiLoCo / data-parallel presets and their report."""

import dataclasses
import json

import pytest

from efficient.models.transformer import TransformerConfig
from efficient.sharding import MeshConfig
from experiments import language_modeling, noloco, noloco_report
from experiments.registry import presets


def test_the_three_presets_differ_only_in_the_outer_optimizer():
    registered = presets()
    configs = {m: registered[f"{m}/kjv"].config for m in noloco.METHODS}
    assert configs["dataparallel"].train.outer is None
    assert configs["diloco"].train.outer.name == "diloco"
    assert configs["noloco"].train.outer.name == "noloco"
    assert configs["noloco"].train.outer.momentum == 0.5
    for config in configs.values():
        assert config.train.mesh.replica == noloco.REPLICAS == 8
        assert config.data == configs["noloco"].data  # equal tokens: same batch, same steps
        assert config.train.steps == configs["noloco"].train.steps
        assert config.model == configs["noloco"].model
        assert dataclasses.replace(config.train, outer=None) == configs["dataparallel"].train


def test_check_names_the_devices_needed():
    config = noloco.kjv_replicas("noloco")
    too_big = dataclasses.replace(config.train, mesh=MeshConfig(replica=16, data=1))
    with pytest.raises(ValueError, match="needs 16 devices.*device_count=16"):
        noloco.check_compatible(dataclasses.replace(config, train=too_big))


@pytest.mark.parametrize("method", ["diloko", None])
def test_an_unknown_method_is_named_with_the_known_ones(method):
    with pytest.raises(ValueError, match=r"method=.*'dataparallel', 'diloco', 'noloco'"):
        noloco.kjv_replicas(method)


@pytest.mark.parametrize("method", ["noloco", "dataparallel"])
def test_a_short_run_records_what_each_device_sends(tmp_path, method):
    smoke = language_modeling.smoke(TransformerConfig.smoke())
    config = noloco.kjv_replicas(method)
    outer = config.train.outer and dataclasses.replace(config.train.outer, sync_period=2)
    train = dataclasses.replace(
        config.train, steps=4, log_every=2, eval_every=4, checkpoint_every=4, outer=outer,
        progress=False,
    )  # fmt: skip
    config = dataclasses.replace(
        config, model=smoke.model, data=dataclasses.replace(smoke.data, batch_size=16),
        train=train, sample=dataclasses.replace(smoke.sample, max_new_tokens=4),
    )  # fmt: skip
    summary = language_modeling.run(config, tmp_path)
    comm = summary["communication"]
    model_bytes = 4 * summary["num_params"]
    if method == "noloco":  # the fast weights to one peer per sync
        assert comm["bytes_per_device_per_sync"] == model_bytes
        assert comm["bytes_per_device_per_step"] == model_bytes / 2
        assert set(comm["collective_ops"]) == {"collective-permute"}
    else:  # gradients ring-all-reduced every step over the 8 replicas (+ a few metric scalars)
        ring = 2 * 7 / 8 * model_bytes
        assert ring <= comm["bytes_per_device_per_step"] <= ring + 2 * 7 / 8 * 64
        assert "collective-permute" not in comm["collective_ops"]
    assert len(summary["samples"]) == len(config.sample.prompts)


def _fake_run(directory, loss, per_step, num_params=1000):
    directory.mkdir(parents=True)
    lines = [{"step": s, "split": "eval", "loss": loss + 1.0 / s} for s in (10, 20)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {
        "step": 20, "num_params": num_params, "final_eval": {"loss": loss + 0.05},
        "best_eval": {"loss": loss + 0.05},
        "communication": {"bytes_per_device_per_step": per_step, "sync_period": 5,
                          "bytes_per_device_per_sync": per_step * 5,
                          "collective_ops": {"collective-permute": 3}},
    }  # fmt: skip
    (directory / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize(
    ("noloco_loss", "verdict"), [(1.01, "met"), (0.90, "met"), (1.10, "not met")]
)
def test_report_table_plots_and_verdict(tmp_path, noloco_loss, verdict):
    _fake_run(tmp_path / "diloco", 1.0, 350.0)
    _fake_run(tmp_path / "noloco", noloco_loss, 800.0)
    assert noloco_report.main(["--runs-dir", str(tmp_path)]) == 0
    text = (tmp_path / "noloco_report.md").read_text()
    assert f"goal: at most 2% above DiLoCo's: {verdict})" in text
    assert "| noloco | " in text and "| diloco | " in text and "dataparallel" not in text
    for name in ("loss_vs_step", "loss_vs_bytes", "sync_time"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert noloco_report.main(["--runs-dir", str(tmp_path / "none")]) == 1
