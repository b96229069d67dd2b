"""pytest plugin: every suite YAML in ``evals/`` with a ``gates:`` list becomes one test per gate x strategy.

``pytest evals/`` (and ``make test``, which has ``evals`` in its testpaths) collects the items without
running anything; the first item of a suite runs it once for the session (run, offline scoring,
gates: :func:`workbench.workflows.eval.run_eval`), and every item reports its own verdict. So JUnit
XML (``--junitxml``) and CI summaries list each bound by name. Suites without gates (``demo.yaml``)
yield no items.

Options: ``--eval-baseline RUN`` (or ``$WORKBENCH_EVAL_BASELINE``) checks the regression gates
against that run, otherwise they are skipped with the reason; ``--eval-runs-dir`` (default ``runs``,
or ``$WORKBENCH_EVAL_RUNS_DIR``) is where run folders and their ``verdict.json`` go.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
for _var in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):  # would switch end of turn to the cloud
    os.environ.pop(_var, None)

HERE = Path(__file__).resolve().parent
VERDICTS = pytest.StashKey[dict[Path, Any]]()
RUN_TIMEOUT_S = 900  # the first item of a suite carries the whole run
# suites for users, not for `pytest evals`: booking.yaml runs on the one embedded model that calls tools
# (Qwen2.5-Coder-0.5B, hermes-tools), which fails its gates and takes many minutes on two cores, with multi-step
# tool loops that vary with load (see its header); tests/integration/test_tool_calling_real.py covers the path
collect_ignore = ["booking.yaml"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbench evals")
    group.addoption(
        "--eval-baseline",
        default=os.environ.get("WORKBENCH_EVAL_BASELINE"),
        metavar="RUN",
        help="baseline run (id or folder) for regression gates; without it they are skipped",
    )
    group.addoption(
        "--eval-runs-dir",
        default=os.environ.get("WORKBENCH_EVAL_RUNS_DIR", "runs"),
        metavar="DIR",
        help="where eval runs and their verdict.json go (default: runs)",
    )


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and file_path.resolve().parent == HERE:
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    """One suite YAML: its items are known from the file alone (the run waits for the first item)."""

    def collect(self) -> Iterator[pytest.Item]:
        from workbench.analysis.gates import expand, parse_gates
        from workbench.workflows.suite import load_suite

        suite = load_suite(self.path)  # a bad suite or gate is a collection error naming the file and the gate
        seen: set[str] = set()
        for i, gate, strategy in expand(parse_gates(suite.gates), list(suite.strategies), suite.baseline):
            name = f"{gate.label} [{strategy}]"
            if name in seen:
                name = f"{gate.label} #{i + 1} [{strategy}]"
            seen.add(name)
            item = GateItem.from_parent(self, name=name, gate_index=i, strategy=strategy)
            item.add_marker(pytest.mark.integration)  # real models: `make test-fast` leaves them out
            item.add_marker(pytest.mark.timeout(RUN_TIMEOUT_S))
            yield item


class GateFailed(Exception):
    """A gate broke, a regression was found, or a required gate had no evidence."""


class GateItem(pytest.Item):
    def __init__(self, *, gate_index: int, strategy: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate_index, self.strategy = gate_index, strategy

    def runtest(self) -> None:
        verdict = suite_verdict(self.config, self.path)
        r = verdict.result(self.gate_index, self.strategy)
        if r is None:
            raise GateFailed(f"no verdict for gate #{self.gate_index + 1} and {self.strategy!r} in {verdict.run_id}")
        self.user_properties += [
            ("status", r.status),
            ("value", r.value),
            ("bound", r.bound),
            ("n", r.n),
            ("p_value", r.p_value),
            ("run_id", verdict.run_id),
        ]
        if r.status == "skipped":
            pytest.skip(f"{r.name} [{r.strategy}]: {r.detail}")
        if r.failed:
            word = "no evidence" if r.status == "error" else "failed"
            raise GateFailed(f"{r.name} [{r.strategy}] {word}: {r.detail}  (run {verdict.run_id})")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name}: {self.name}"


def suite_verdict(config: pytest.Config, path: Path) -> Any:
    """The suite's verdict, computed once per session (a failure to produce it is re-raised for every item)."""
    cache = config.stash.setdefault(VERDICTS, {})
    if path not in cache:
        from workbench.workflows.eval import run_eval

        runs_dir = Path(config.getoption("eval_runs_dir"))
        if not runs_dir.is_absolute():
            runs_dir = config.rootpath / runs_dir
        try:
            cache[path] = run_eval(path, baseline=config.getoption("eval_baseline"), runs_dir=runs_dir)
        except Exception as e:
            cache[path] = e
    got = cache[path]
    if isinstance(got, Exception):
        raise got
    return got


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for path, v in config.stash.get(VERDICTS, {}).items():
        if isinstance(v, Exception):
            terminalreporter.write_line(f"eval {path.name}: could not run: {v}", red=True)
            continue
        counts = ", ".join(f"{n} {k}" for k, n in v.counts().items() if n)
        terminalreporter.write_line(
            f"eval {path.name}: {'PASSED' if v.passed else 'FAILED'} ({counts}); "
            f"verdict: {v.run_path / 'verdict.json'}",
            green=v.passed,
            red=not v.passed,
        )
