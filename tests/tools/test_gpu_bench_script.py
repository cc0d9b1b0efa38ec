"""tools/gpu_bench.sh runs only on a lent GPU, minutes at a time: its kernel options must be
valid before it gets there (a typo would cost a step of a 15-minute session)."""

import itertools
import pathlib
import re
import subprocess

from pallas_kernels.fft_conv import BlockSizes as FftBlockSizes
from pallas_kernels.rational.kernel import BlockSizes as RationalBlockSizes

SCRIPT = pathlib.Path(__file__).parents[2] / "tools" / "gpu_bench.sh"


def _commands(module: str) -> list[list[str]]:
    """The argument lists of every `"$PY" -m <module>` call in the script (a default of an
    overridable list, `${NAME:-a b c}`, read as its words)."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    # The specs of a `check_fft[:SPEC]` step come at run time (its default list, or its name).
    default = re.search(r"\$\{CHECK_FFT_VARIANTS:-([^}]*)\}", text)[1]
    text = text.replace("--fft-variants $variants", f"--fft-variants {default}")
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return [
        line.split(f"-m {module} ", 1)[1].split()
        for line in text.splitlines()
        if f"-m {module} " in line
    ]


def _values(args: list[str], flag: str) -> list[str]:
    if flag not in args:
        return []
    rest = args[args.index(flag) + 1 :]
    return list(itertools.takewhile(lambda a: not a.startswith("--"), rest))


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_fft_conv_specs_parse():
    from pallas_kernels import check
    from pallas_kernels.fft_conv import bench

    rows = [  # "pallas:FWD/BWD[+saved]" rows: a tiling per pass
        bench.split_saved(impl)[0].partition(":")[2]
        for args in _commands("pallas_kernels.fft_conv.bench")
        for impl in _values(args, "--implementations")
        if impl.startswith("pallas:")
    ]
    variants = [
        v for args in _commands("pallas_kernels.check") for v in _values(args, "--fft-variants")
    ]
    assert len(rows) + len(variants) >= 12  # the parse found the script's specs (16 in it now)
    assert any(v.endswith("+saved") for v in variants)
    for spec in rows:
        for tiling in spec.split("/"):
            FftBlockSizes.parse(tiling)
        bench._tilings(spec)  # a pair's plans agree
    for variant in variants:
        check._fft_variant(variant)


def test_rational_tilings_are_valid():
    tilings = [
        impl.partition(":")[2]
        for args in _commands("pallas_kernels.rational.bench")
        for impl in _values(args, "--implementations")
        if ":" in impl
    ]
    assert tilings
    tilings += [
        v
        for args in _commands("pallas_kernels.check")
        for v in _values(args, "--rational-variants")
    ]
    tilings += [
        v
        for args in _commands("pallas_kernels.rational.diagnose")
        for v in _values(args, "--tilings")
    ]
    for tiling in tilings:
        RationalBlockSizes.parse(tiling)


def test_benches_and_presets_exist():
    from experiments.benches import BENCHES
    from experiments.registry import presets

    benches = [args[0] for args in _commands("experiments.bench")]
    assert benches and set(benches) <= set(BENCHES), set(benches) - set(BENCHES)
    text = SCRIPT.read_text()
    names = [n for line in re.findall(r"for preset in ([^;]+);", text) for n in line.split()]
    for block in re.findall(r"<<'RUNS'\n(.*?)\nRUNS\n", text, flags=re.S):
        names += [line.split()[1] for line in block.splitlines()]
    assert len(names) >= 10
    assert set(names) <= set(presets()), set(names) - set(presets())


def test_kernel_commands_parse():
    """Each kernel check/bench command line parses (a spec starting with "-", like "-bf16",
    reads as an unknown option: that cost the H200 session's whole check step)."""
    from pallas_kernels import check
    from pallas_kernels.fft_conv import bench as fft_bench
    from pallas_kernels.fft_conv import diagnose as fft_diagnose
    from pallas_kernels.rational import bench as rational_bench
    from pallas_kernels.rational import diagnose

    for module, parser in (
        ("pallas_kernels.fft_conv.diagnose", fft_diagnose.build_parser()),
        ("pallas_kernels.check", check.build_parser()),
        ("pallas_kernels.fft_conv.bench", fft_bench.build_parser()),
        ("pallas_kernels.rational.bench", rational_bench.build_parser()),
        ("pallas_kernels.rational.diagnose", diagnose.build_parser()),
    ):
        commands = _commands(module)
        assert commands, module
        for args in commands:
            parser.parse_args(args)  # SystemExit on an unknown argument
