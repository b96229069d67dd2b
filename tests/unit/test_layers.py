"""The package imports downward only: core, models, knowledge, strategies, replay, scoring, analysis,
workflows, then the CLI and the worker. Product code never imports ``workbench.testing``.

``KNOWN`` would list an upward import kept on purpose, with its reason; it is empty. The test fails on any
other upward import, and on a ``KNOWN`` entry that no longer occurs (so the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "workbench"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("workbench.core",)),
    ("models", ("workbench.models", "workbench.faults")),
    ("knowledge", ("workbench.knowledge",)),
    ("strategies", ("workbench.strategies", "workbench.pipeline")),
    ("replay", ("workbench.replay",)),
    ("scoring", ("workbench.scoring",)),
    ("analysis", ("workbench.analysis",)),
    ("workflows", ("workbench.workflows",)),
    ("apps", ("workbench.cli", "workbench.worker", "workbench.__main__")),
]


KNOWN: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int | None:
    """The layer of ``module``: the longest matching prefix wins (``workbench.workflows.faults`` is a workflow)."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def imports(path: Path) -> set[str]:
    """Every ``workbench.*`` module a file imports, at module level or inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("workbench.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        if me.startswith("workbench.testing"):
            continue
        mine = layer_of(me)
        for target in imports(path):
            if target.startswith("workbench.testing"):
                found.add((me, target))
                continue
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                found.add((me, target))
    return found


def test_every_module_is_in_a_layer() -> None:
    unplaced = [module_name(p) for p in PACKAGE.rglob("*.py") if layer_of(module_name(p)) is None]
    assert set(unplaced) <= {"workbench"} | {m for m in unplaced if m.startswith("workbench.testing")}, unplaced


def test_imports_point_down_only() -> None:
    found = violations()
    new = sorted(found - KNOWN.keys())
    assert not new, "imports that point up a layer (or into workbench.testing): " + ", ".join(
        f"{a} -> {b}" for a, b in new
    )


def test_the_known_exceptions_still_exist() -> None:
    gone = sorted(KNOWN.keys() - violations())
    assert not gone, f"remove these from KNOWN, they no longer occur: {gone}"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from workbench.analysis.compare import compare\n")
    assert "workbench.analysis.compare" in imports(bad)
    assert layer_of("workbench.analysis.compare") > layer_of("workbench.models.stack")  # type: ignore[operator]


def closure(module: str) -> set[str]:
    """Every ``workbench`` module ``module`` reaches through its imports (module level or in functions)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        base = PACKAGE.parent / Path(*m.split("."))
        path = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if path.exists():
            todo.extend(imports(path))
    return seen


def test_the_worker_imports_the_promoted_file_and_the_pipeline_not_the_eval() -> None:
    reached = closure("workbench.worker")
    assert "workbench.pipeline.promoted" in reached and "workbench.pipeline" in reached
    eval_side = sorted(
        m
        for m in reached
        if m.startswith(("workbench.workflows", "workbench.analysis", "workbench.scoring", "workbench.replay"))
    )
    assert not eval_side, f"the worker reaches eval code: {eval_side}"
