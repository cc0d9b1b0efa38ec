"""Every notebook runs top to bottom in smoke mode, and its .ipynb twin is in sync and clean."""

import pathlib

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[2] / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_ipynb_is_in_sync_and_has_no_outputs(path):
    twin = path.with_suffix(".ipynb")
    assert twin.exists(), f"run: jupytext --sync {path}"
    script, paired = jupytext.read(path), nbformat.read(twin, as_version=4)
    assert [c.source for c in script.cells] == [c.source for c in paired.cells], (
        f"{twin.name} is out of date: run jupytext --sync {path}"
    )
    assert all(not c.get("outputs") for c in paired.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path):
    notebook = jupytext.read(path)
    assert any("SMOKE = True" in c.source for c in notebook.cells), "notebooks default to SMOKE"
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
