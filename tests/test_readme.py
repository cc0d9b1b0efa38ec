"""Every Python block of the READMEs (the top one, each model's and each kernel's) runs as it
stands, so a reader's copy-paste works, and what it computes comes out finite."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).parents[1]
READMES = [ROOT / "README.md", *sorted(ROOT.glob("efficient/models/*/README.md"))]
READMES += sorted(ROOT.glob("pallas_kernels/*/README.md"))
BLOCKS = [
    (readme.relative_to(ROOT).as_posix(), index, code)
    for readme in READMES
    for index, code in enumerate(
        re.findall(r"^```python\n(.*?)^```$", readme.read_text(), flags=re.M | re.S)
    )
]


def test_the_readmes_have_python_blocks():
    assert sum(name == "README.md" for name, _, _ in BLOCKS) >= 3
    assert len({name for name, _, _ in BLOCKS}) >= 10


@pytest.mark.slow
@pytest.mark.parametrize(("name", "index", "code"), BLOCKS, ids=[f"{n}:{i}" for n, i, _ in BLOCKS])
def test_readme_python_block_runs(name, index, code):
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"{name} python block {index}", "exec"), namespace)
    arrays = [v for v in namespace.values() if isinstance(v, jax.Array)]
    floats = [v for v in arrays if jnp.issubdtype(v.dtype, jnp.floating)]
    assert floats
    for value in floats:
        assert np.all(np.isfinite(np.asarray(value)))
