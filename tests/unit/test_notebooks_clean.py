"""The notebooks as committed: no outputs, the expected five, and the strategy example identical to the docs'.

Executing them is an integration test (tests/integration/test_notebooks.py); these checks are static and fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = {
    "01_compare_strategies",
    "02_latency_deep_dive",
    "03_voice_replay_and_stt",
    "04_write_your_own_strategy",
    "05_bring_your_own_agent",
}


def test_the_five_notebooks_are_there() -> None:
    assert {p.stem for p in NOTEBOOKS.glob("*.ipynb")} == NAMES


@pytest.mark.parametrize("name", sorted(NAMES))
def test_committed_notebook_has_no_outputs(name: str) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs; strip them before committing with "
        f"`.venv/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`"
    )
    assert "widgets" not in nb.metadata  # saved widget state is output too
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_04_runs_the_strategy_example_from_the_docs() -> None:
    """docs/strategies.md and notebook 04 show one example: a change to either must reach the other."""
    doc = (ROOT / "docs" / "strategies.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Write and register your own") :]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    nb = nbformat.read(NOTEBOOKS / "04_write_your_own_strategy.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "class PoliteStrategy" in c.source]
    assert cells == [example.group(1).strip()]


def test_a_strategy_class_redefined_in_place_replaces_the_registered_one() -> None:
    """Re-running the notebook cell that defines a strategy must not fail with 'already registered'."""
    from workbench.strategies import REGISTRY, Strategy, register

    def define_in_cell() -> type[Strategy]:
        @register
        class CellStrategy(Strategy):
            kind = "_notebook_cell_strategy"

        return CellStrategy

    try:
        first, second = define_in_cell(), define_in_cell()
        assert first is not second and REGISTRY["_notebook_cell_strategy"] is second
        other = type("OtherStrategy", (Strategy,), {"kind": "_notebook_cell_strategy", "__module__": __name__})
        with pytest.raises(ValueError, match="already registered by CellStrategy"):
            register(other)
        assert REGISTRY["_notebook_cell_strategy"] is second
    finally:
        REGISTRY.pop("_notebook_cell_strategy", None)
