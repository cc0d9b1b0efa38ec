"""`python -m experiments.run`: listing, one-line errors, overrides, smoke presets, resume."""

import json
import subprocess
import sys

import pytest

from experiments import run as run_cli
from experiments.registry import presets


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args], capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_list_shows_every_preset_with_a_description():
    out = _cli("--list")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(presets())
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["lowformer/smok"], "close matches: lowformer/smoke"),
        (["lowformer/smoke", "--train.stepz", "3"], "close matches: train.steps"),
        (["lowformer/smoke", "--train.steps", "abc"], "--train.steps"),
        (["lowformer/smoke", "--train.steps", "0"], "TrainConfig.steps=0"),
        (["lowformer/smoke", "--data.source", "imagenet"], "'fashion_mnist', 'synthetic'"),
        (["lowformer/smoke", "--model.in_channels", "3"], "model.in_channels=3"),
        (["lowformer/smoke", "--train.mesh.data", "16"], "axes multiply to 16, but 8 devices"),
    ],
)
def test_errors_are_one_line_without_traceback(args, expected, capsys):
    assert run_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert "Traceback" not in err


def test_unknown_name_from_the_shell_exits_2():
    out = _cli("no/such")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]


@pytest.mark.parametrize("name", [None, ["lowformer/smoke"]])
def test_a_name_not_a_string_is_an_unknown_experiment(name):
    with pytest.raises(run_cli.UsageError, match=r"unknown experiment (None|\['lowformer/smoke)"):
        run_cli.find_preset(name)


def test_overrides_reach_the_config():
    config = run_cli.apply_overrides(
        presets()["lowformer/smoke"].config,
        ["--train.steps", "7", "--train.optimizer.learning_rate", "0.5", "--data.augment", "False",
         "--model.depths", "1", "1", "1", "1", "1"],
    )  # fmt: skip
    assert config.train.steps == 7 and config.train.optimizer.learning_rate == 0.5
    assert config.data.augment is False and config.model.depths == (1, 1, 1, 1, 1)


@pytest.mark.parametrize("name", [n for n in presets() if n.endswith("/smoke")])
def test_smoke_presets_run(name, tmp_path, capsys):
    assert run_cli.main([name, "--workdir", str(tmp_path), "--train.progress", "False"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == summary["steps"]
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if r["split"] == "train"]
    first, last = train[0], train[-1]
    assert last < first, f"{name}: the train loss did not fall ({first} -> {last})"
    assert (tmp_path / "plots" / "loss.png").exists()
    assert "== completed" in capsys.readouterr().out


def test_resume_continues_the_latest_run(tmp_path, monkeypatch):
    monkeypatch.setattr(run_cli, "RUNS_DIR", tmp_path)
    # transformer/smoke: of the smoke presets one of the quickest to build (~16 s a run on 2 CPU
    # cores, lowformer/smoke ~54 s); the CLI's resume logic is the same for every preset.
    args = ["transformer/smoke", "--train.progress", "False", "--train.steps", "8",
            "--train.log_every", "2", "--train.eval_every", "0"]  # fmt: skip
    assert run_cli.main([*args, "--train.stop_after", "4"]) == 0  # paused, resumable
    (run_dir,) = (tmp_path / "transformer" / "smoke").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "paused"
    assert run_cli.main([*args, "--resume"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 8
    # A fresh run into a used workdir is refused with a one-line message.
    assert run_cli.main([*args, "--workdir", str(run_dir)]) == 2
