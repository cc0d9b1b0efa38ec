"""Progress output: tqdm's bar where it redraws, plain lines (no carriage returns) elsewhere."""

import io

from efficient.train import TrainConfig, progress, train
from efficient.train.progress import LineProgress, progress_bar, redraws
from tests.efficient.train._toy import toy_eval_data, toy_task, toy_train_data


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_at_the_interval_and_at_the_end():
    out = io.StringIO()
    bar = LineProgress(total=10, initial=2, desc="run", interval=0.0, file=out)
    bar.update(3)
    bar.set_postfix(loss="1.2500")
    bar.update(5)
    bar.close()  # nothing new since the last line: no repeat
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert lines[0].startswith("run:  50%|") and "5/10" in lines[0]
    assert "10/10" in lines[1] and lines[1].endswith("loss=1.2500]")


def test_a_long_interval_prints_once_at_the_end():
    out = io.StringIO()
    bar = LineProgress(total=4, desc="run", interval=3600.0, file=out)
    for _ in range(4):
        bar.update()
    assert out.getvalue() == ""
    bar.close()
    assert out.getvalue().count("\n") == 1 and "4/4" in out.getvalue()


def test_the_rate_is_the_one_since_the_line_before(monkeypatch):
    clock = iter([0.0, 100.0, 110.0])  # start; 10 steps (compiling); 50 more steps in 10 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = LineProgress(total=100, interval=1.0, file=out)
    bar.update(10)
    bar.update(50)
    first, second = out.getvalue().splitlines()
    assert "10.00s/step" in first  # 10 steps in 100 s (tqdm inverts slow rates)
    assert "5.00step/s" in second and "<00:08" in second  # 40 steps left at 5 steps/s


def test_a_session_without_steps_prints_one_line():
    out = io.StringIO()
    LineProgress(total=10, initial=10, desc="run", file=out).close()
    assert out.getvalue().count("\n") == 1 and "10/10" in out.getvalue()


def test_write_goes_to_standard_output(capsys):
    LineProgress(total=1, file=io.StringIO()).write("step 1: eval loss=1.0")
    assert capsys.readouterr().out == "step 1: eval loss=1.0\n"


def test_which_bar(monkeypatch):
    assert redraws(_Terminal()) and not redraws(io.StringIO())
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(total=3), LineProgress)
    assert not isinstance(progress_bar(total=3, enabled=False), LineProgress)
    monkeypatch.setattr(progress.sys, "stderr", _Terminal())
    bar = progress_bar(total=3)
    assert not isinstance(bar, LineProgress)
    bar.close()


def test_a_logged_run_has_no_carriage_returns(tmp_path, capsys):
    config = TrainConfig(steps=6, log_every=2, checkpoint_every=6, progress=True)
    train(toy_task(), config, train_data=toy_train_data(), eval_data=toy_eval_data,
          workdir=tmp_path)  # fmt: skip
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\r" not in err and "6/6" in err.splitlines()[-1]
