"""Language-model experiments: samples at the end, CLI overrides of the sampler, config checks."""

import dataclasses
import json

import pytest

from efficient.models.transformer import TransformerConfig
from experiments import run as run_cli
from experiments.language_modeling import SampleConfig, check_compatible, smoke


def test_transformer_smoke_writes_samples(tmp_path):
    args = ["transformer/smoke", "--workdir", str(tmp_path), "--train.progress", "False",
            "--train.steps", "6", "--train.eval_every", "0", "--sample.prompts", "ab", "xyz",
            "--sample.max_new_tokens", "5", "--sample.temperature", "0.0"]  # fmt: skip
    assert run_cli.main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    first, second = summary["samples"]
    assert first.startswith("ab") and second.startswith("xyz")
    assert len(first.encode()) >= 2 + 5 or "\ufffd" in first  # bytes may not decode 1:1
    assert summary["data"]["vocab_size"] == 256 and summary["data"]["source"] == "synthetic"
    assert summary["best_eval"]["loss"] == summary["final_eval"]["loss"]
    assert "--- prompt 'xyz'" in (tmp_path / "samples.txt").read_text()


def test_check_compatible_rejects_a_small_vocabulary():
    config = smoke(TransformerConfig.smoke(vocab_size=100))
    with pytest.raises(ValueError, match="model.vocab_size=100"):
        check_compatible(config)
    check_compatible(dataclasses.replace(config, model=TransformerConfig.smoke()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"prompts": ("",)}, "prompts"),
    ],
)
def test_sample_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SampleConfig(**kwargs)
