"""`python -m pallas_kernels.fft_conv.diagnose`: every DFT matmul and transform right in
interpret mode, and a wrong one reported as wrong."""

import json

import pytest

from pallas_kernels.fft_conv import diagnose, monarch


def test_every_dot_and_transform_is_right_in_interpret_mode(tmp_path):
    out = tmp_path / "d.json"
    argv = ["--kinds", "bf16", "f32", "--radices", "16", "32", "--plans", "16x16x16", "32x32"]
    assert diagnose.main([*argv, "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    dots = [r for r in results if "radix" in r]
    # [n, n] on 2 axes, [4, n, n] on 2, [n, n, n] on 3, per kind and radix.
    assert len(dots) == 2 * 2 * 7
    assert {r["plan"] for r in results if "plan" in r} == {"16x16x16", "32x32"}
    assert all(r["ok"] and r["bitwise_rerun"] for r in results)
    # The bf16 dots are compared with the product of bf16-rounded inputs: exact products and
    # f32 sums, so their error is f32's, not bf16's.
    assert max(r["rel_err"] for r in dots if r["kind"] == "bf16") < 1e-6


def test_a_wrong_dot_is_reported(tmp_path, monkeypatch):
    """The check can fail: the kernels' 2-D dots (what a pallas_call compiles) dropping the
    matrix's last row are caught, in the dots and in the transforms, as a miscompile would be
    (the reference spells its dots as einsums, left intact here)."""
    apply = monarch._apply

    def broken(mat, x, axis, two_d=False, dot="f32"):
        return apply(mat.at[-1].set(0.0) if two_d else mat, x, axis, two_d, dot)

    monkeypatch.setattr(monarch, "_apply", broken)
    out = tmp_path / "d.json"
    argv = ["--kinds", "f32", "--radices", "16", "--plans", "16x16", "--out", str(out)]
    assert diagnose.main(argv) == 1
    results = json.loads(out.read_text())["results"]
    assert results and not any(r["ok"] for r in results)
    assert min(r["rel_err"] for r in results if "radix" in r) > 1e-2
    assert min(r["rel_err"]["y"] for r in results if "plan" in r) > 1e-2


def test_unknown_kind_is_refused_up_front():
    with pytest.raises(ValueError, match=r"diagnose.kind='bf8': must be one of \['bf16'"):
        diagnose.diagnose("bf8", 16, (16, 16), 0)
    with pytest.raises(ValueError, match=r"diagnose_transform.kind='bf8': must be one of"):
        diagnose.diagnose_transform("bf8", (16, 16))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--kinds", "tf32"], "need a GPU"),
        (["--plans", "16x15"], "each a power of two"),
        (["--radices", "8"], "invalid choice"),
    ],
)
def test_usage_errors(argv, match, capsys):
    with pytest.raises(SystemExit):
        diagnose.main(argv)
    assert match in capsys.readouterr().err
