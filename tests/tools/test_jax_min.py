"""`make test-kernels-jax-min` (CI) tests the kernels under the oldest jax pyproject.toml allows:
the Makefile's pin must follow pyproject's lower bound."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_makefile_jax_min_is_pyprojects_lower_bound():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (jax,) = [d for d in dependencies if re.match(r"jax\s*[><=]", d)]
    lower = re.search(r">=\s*([0-9.]+)", jax)
    assert lower, jax
    pin = re.search(r"^JAX_MIN\s*:=\s*(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pin, "Makefile: no JAX_MIN"
    assert pin.group(1) == lower.group(1)
