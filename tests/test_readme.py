"""The README's Python blocks run as they stand, so a first reader's copy-paste works."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    # What a block computes comes out finite.
    arrays = [v for v in namespace.values() if isinstance(v, jax.Array)]
    floats = [v for v in arrays if jnp.issubdtype(v.dtype, jnp.floating)]
    assert floats
    for value in floats:
        assert np.all(np.isfinite(np.asarray(value)))
