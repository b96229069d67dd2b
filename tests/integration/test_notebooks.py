"""Each notebook executes top to bottom on the embedded models, in a fresh kernel (nbclient, nbmake's engine).

The text and voice runs notebooks 01-03 analyse are replayed once per module and handed to the kernels through
``WORKBENCH_NB_TEXT_RUN`` / ``WORKBENCH_NB_VOICE_RUN``, the way a reader points a notebook at an existing run;
notebook 04 replays its own suite, which is its point. Every notebook ends with assertions on its own numbers,
so one that still runs but stops making sense fails here too. Outputs are never written back to the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

# notebook -> (runs it analyses, figures it shows, audio players it shows)
EXPECTED: dict[str, tuple[tuple[str, ...], int, int]] = {
    "01_compare_strategies": (("text",), 4, 0),
    "02_latency_deep_dive": (("text", "voice"), 5, 0),
    "03_voice_replay_and_stt": (("voice",), 1, 2),
    "04_write_your_own_strategy": ((), 1, 0),
    "05_bring_your_own_agent": ((), 1, 0),
}
RUN_ENV = {"text": "WORKBENCH_NB_TEXT_RUN", "voice": "WORKBENCH_NB_VOICE_RUN"}
SUITES = {"text": "small.yaml", "voice": "small_voice.yaml"}


@pytest.fixture(scope="module")
def nb_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook-runs")


@pytest.fixture(scope="module")
def nb_stack(nb_runs_dir: Path) -> Iterator[Any]:
    """The notebooks' own config (notebooks/workbench.yaml), with its state in the temporary folder."""
    from workbench.core.config import load_config
    from workbench.models import ModelStack

    config = load_config(NOTEBOOKS / "workbench.yaml").model_copy(update={"state_dir": nb_runs_dir / "state"})
    stack = ModelStack(config)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def nb_run(nb_runs_dir: Path, nb_stack: Any) -> Any:
    """Replays a notebook suite the first time it is asked for, then hands back the same run folder."""
    from workbench.workflows import load_suite, run

    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            suite = load_suite(NOTEBOOKS / SUITES[kind])
            made[kind] = run(suite, runs_dir=nb_runs_dir, stack=nb_stack, progress=False).path
        return made[kind]

    return get


def _count(outputs: list[Any], predicate: Any) -> int:
    return sum(1 for o in outputs if predicate(o.get("data", {})))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_executes_top_to_bottom(
    name: str, nb_run: Any, nb_runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs, figures, players = EXPECTED[name]
    monkeypatch.setenv("WORKBENCH_NB_RUNS_DIR", str(nb_runs_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a model that tried the hub would fail here, not download
    for kind, var in RUN_ENV.items():
        if kind in runs:
            monkeypatch.setenv(var, str(nb_run(kind)))
        else:
            monkeypatch.delenv(var, raising=False)

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert _count(outputs, lambda d: "image/png" in d) == figures
    assert _count(outputs, lambda d: "<audio" in d.get("text/html", "")) == players
