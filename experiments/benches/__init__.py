"""Benchmark specs registered by name for `python -m experiments.bench NAME`."""

# A new paper adds a module here (a `SPEC = BenchSpec(...)`) and one line to BENCHES. Specs import
# model code inside `run`, so `--list` never imports a model.
from experiments.benches import hyena, kat, lact, lowformer, slowfast, tim4rec, transformer
from experiments.benches.spec import BenchArgs, BenchSpec, resolve_models

__all__ = ["BENCHES", "BenchArgs", "BenchSpec", "resolve_models"]

BENCHES: dict[str, BenchSpec] = {
    "hyena": hyena.SPEC,
    "kat": kat.SPEC,
    "lact": lact.SPEC,
    "lowformer": lowformer.SPEC,
    "slowfast": slowfast.SPEC,
    "tim4rec": tim4rec.SPEC,
    "transformer": transformer.SPEC,
}
