"""Hyena presets: the smoke run samples text through the cached decode; kjv is transformer/kjv's
recipe with the model swapped; length checks."""

import dataclasses
import json
import math

import pytest

from efficient.models.hyena import HyenaConfig
from experiments import hyena, transformer
from experiments import run as run_cli
from experiments.registry import presets


def test_hyena_smoke_trains_and_writes_samples(tmp_path):
    args = ["hyena/smoke", "--workdir", str(tmp_path), "--train.progress", "False",
            "--train.steps", "6", "--train.eval_every", "0", "--sample.prompts", "ab",
            "--sample.max_new_tokens", "5", "--sample.temperature", "0.0"]  # fmt: skip
    assert run_cli.main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["samples"][0].startswith("ab")
    assert math.isfinite(summary["final_eval"]["loss"])


def test_kjv_is_the_transformer_recipe_with_the_hyena_model():
    ours, theirs = presets()["hyena/kjv"].config, presets()["transformer/kjv"].config
    assert ours.model == HyenaConfig.kjv()
    assert dataclasses.replace(ours, model=theirs.model) == theirs
    assert hyena.kjv() == ours and transformer.kjv() == theirs


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: dataclasses.replace(c, data=dataclasses.replace(c.data, seq_len=512)),
         "data.seq_len=512"),
        (lambda c: dataclasses.replace(c, sample=dataclasses.replace(c.sample,
                                                                     max_new_tokens=255)),
         "max_new_tokens=255"),
        (lambda c: dataclasses.replace(c, model=HyenaConfig.smoke(vocab_size=100)),
         "vocab_size=100"),
    ],
)  # fmt: skip
def test_check_compatible_rejects_sequences_beyond_max_len(change, match):
    config = presets()["hyena/smoke"].config  # max_len 256, T 64, prompt 'the ' + 32
    hyena.check_compatible(config)
    with pytest.raises(ValueError, match=match):
        hyena.check_compatible(change(config))
