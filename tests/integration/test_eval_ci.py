"""`workbench eval`, `pytest evals/` and the CI workflow, end to end against a scripted OpenAI-compatible endpoint.

One scripted server plays three models: ``good`` answers with the fact, ``bad`` answers without it,
``slow`` answers like ``good`` but 0.4 s later. A suite whose strategy points at ``bad`` or ``slow``
must fail its bounds and regress against a baseline run made on ``good``; an identical rerun passes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.config import load_config
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.workflows.eval import VERDICT_FILE, EvalError, run_eval
from workbench.workflows.promote import PromotionRefused, promote
from workbench.workflows.suite import load_suite

REPO = Path(__file__).resolve().parents[2]
FAST_TTFT, SLOW_TTFT = 0.02, 0.4
ANSWERS = {
    "good": "We open at 8 am on weekdays.",
    "bad": "We are closed today.",
    "slow": "We open at 8 am on weekdays.",
}
GATES = [
    {"metric": "error_rate", "max": 0.0},
    # p50, not p90: a garbage-collection pause in this busy test process can hold one turn for ~0.4 s
    {"metric": "llm_ttfc_s", "stat": "p50", "max": 0.25},
    {"metric": "fact_recall", "min": 0.9},
    {"metric": "fact_recall", "max_drop": 0.05},
    {"metric": "llm_ttfc_s", "max_rise": 0.1},
]
ITEMS = 6  # conversations x turns: enough paired items for p < 0.05 (smallest one-sided p: 1/64)


def script_for(request: dict) -> Script:
    model = request.get("model", "good")
    return Script(text=ANSWERS.get(model, ANSWERS["good"]), ttft_s=SLOW_TTFT if model == "slow" else FAST_TTFT)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint(script_for) as ep:  # own thread and loop: usable from sync code and the CLI
        yield ep


@pytest.fixture(scope="module")
def world(endpoint: ScriptedEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset, a config naming the three models, and a baseline run ``base`` made on the good model."""
    root = tmp_path_factory.mktemp("eval")
    ds = root / "ds"
    (ds / "knowledge").mkdir(parents=True)
    (ds / "knowledge" / "hours.md").write_text("# Hours\n\nWe are open 8 am to 6 pm on weekdays.\n")
    convs = [
        {
            "id": f"c{c}",
            "turns": [
                {"user": f"When do you open? ({c}.{t})", "reference": "At 8 am.", "facts": ["8 am"]} for t in range(2)
            ],
        }
        for c in range(ITEMS // 2)
    ]
    (ds / "conversations.jsonl").write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    ep = {"kind": "openai", "base_url": endpoint.base_url}
    config = {
        "llm": {**ep, "model": "good"},
        "state_dir": str(root / "state"),
        "endpoints": {"bad": {**ep, "model": "bad"}, "slow": {**ep, "model": "slow"}},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    write_suite(root, "base", "default")
    verdict = evaluate(root, "base", run_id="base")
    assert verdict.run_id == "base"
    return root


def write_suite(root: Path, name: str, cand_endpoint: str, gates: list | None = None) -> Path:
    suite = {
        "name": name,
        "dataset": "ds",
        "config": "config.yaml",
        "concurrency": 1,
        "strategies": {"plain": "plain", "cand": {"kind": "plain", "endpoint": cand_endpoint}},
        "gates": GATES if gates is None else gates,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def evaluate(root: Path, name: str, **kw):
    suite = load_suite(root / f"{name}.yaml")
    with ModelStack(load_config(suite.config)) as stack:
        return run_eval(root / f"{name}.yaml", runs_dir=root / "runs", stack=stack, **kw)


def statuses(verdict) -> dict[tuple[str, str], str]:
    return {(r.name, r.strategy): r.status for r in verdict.results}


def test_an_identical_rerun_passes_against_the_baseline(world: Path) -> None:
    write_suite(world, "same", "default")
    v = evaluate(world, "same", baseline="base", run_id="same")
    assert v.passed, [(r.name, r.strategy, r.detail) for r in v.failures]
    regressions = [r for r in v.results if r.kind == "regression"]
    assert len(regressions) == 4 and all(r.status == "pass" for r in regressions)
    recall = next(r for r in regressions if r.metric == "fact_recall" and r.strategy == "cand")
    assert (recall.value, recall.p_value, recall.n) == (0.0, 1.0, ITEMS)  # every pair identical
    saved = json.loads((world / "runs" / "same" / VERDICT_FILE).read_text())
    assert saved["passed"] is True and saved["counts"] == {"pass": 10, "fail": 0, "error": 0, "skipped": 0}
    assert saved["baseline_run"].endswith("runs/base")
    manifest = json.loads((world / "runs" / "same" / "manifest.json").read_text())
    assert manifest["eval"]["passed"] is True and manifest["eval"]["baseline_run"] == saved["baseline_run"]


def test_a_wrong_answering_strategy_breaks_its_bound_and_regresses(world: Path) -> None:
    write_suite(world, "wrong", "bad")
    v = evaluate(world, "wrong", baseline="base", run_id="wrong")
    assert not v.passed
    s = statuses(v)
    assert s[("mean fact_recall", "cand")] == "fail" and s[("mean fact_recall", "plain")] == "pass"
    drop = next(r for r in v.results if r.metric == "fact_recall" and r.kind == "regression" and r.strategy == "cand")
    assert drop.status == "fail" and drop.value == pytest.approx(1.0) and drop.n == ITEMS
    assert drop.p_value == pytest.approx(0.5**ITEMS)  # all six items dropped: the exact one-sided signed-rank p
    assert drop.reference == "baseline run base" and "-> regression" in drop.detail
    assert {(r.name, r.strategy) for r in v.failures} == {
        ("mean fact_recall", "cand"),
        ("fact_recall drop <= 0.05 vs baseline run", "cand"),
    }
    # promote re-checks the same gates, against the baseline the eval recorded in the manifest
    with pytest.raises(PromotionRefused, match=r"fact_recall drop <= 0\.05 vs baseline run failed"):
        promote("wrong", "cand", runs_dir=world / "runs", out=world / "promoted.yaml")
    assert promote("wrong", "plain", runs_dir=world / "runs", out=world / "promoted.yaml").problems == []


def test_a_slower_strategy_breaks_the_latency_bound_and_regresses(world: Path) -> None:
    write_suite(world, "slower", "slow")
    v = evaluate(world, "slower", baseline="base", run_id="slower")
    failed = {(r.name, r.strategy): r for r in v.failures}
    assert set(failed) == {("p50 llm_ttfc_s", "cand"), ("llm_ttfc_s rise <= 0.1 vs baseline run", "cand")}
    rise = failed[("llm_ttfc_s rise <= 0.1 vs baseline run", "cand")]
    assert rise.value == pytest.approx(SLOW_TTFT - FAST_TTFT, abs=0.05) and rise.p_value == pytest.approx(0.5**ITEMS)


def test_cli_exit_codes(world: Path) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "220"}
    runs = ["--runs-dir", str(world / "runs")]
    write_suite(world, "cli", "default")
    res = runner.invoke(
        app, ["eval", str(world / "cli.yaml"), *runs, "--run-id", "cli1", "--baseline", "base", "-q"], env=env
    )
    assert res.exit_code == 0, res.stdout
    assert "PASSED (10 pass)" in res.stdout and "fact_recall drop <= 0.05 vs baseline run" in res.stdout
    # a degraded strategy: exit 1 and the table says which gate and why; reusing the run (--run) says the same
    write_suite(world, "cliwrong", "bad")
    for how in (["--run-id", "cli2", "-q"], ["--run", "cli2"]):
        res = runner.invoke(app, ["eval", str(world / "cliwrong.yaml"), *runs, *how, "--baseline", "base"], env=env)
        assert res.exit_code == 1 and "FAILED (8 pass, 2 fail)" in res.stdout and "-> regression" in res.stdout
    # without a baseline the run regressions are skipped (shown), and the rest passes
    res = runner.invoke(app, ["eval", str(world / "cli.yaml"), *runs, "--run", "cli1"], env=env)
    assert res.exit_code == 0 and re.search(r"PASSED \(6 pass, 4 skipped\)", res.stdout)
    # bad input: exit 2 with the reason
    bad = world / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataset": "ds", "gates": [{"metric": "wer", "stat": "p90"}]}))
    res = runner.invoke(app, ["eval", str(bad), *runs, "--run", "cli1"], env=env)
    assert (
        res.exit_code == 2
        and "gates: gate #1 {'metric': 'wer', 'stat': 'p90'}: gate: give exactly one of max: or min:"
        in " ".join(res.stdout.split())
    )
    res = runner.invoke(app, ["eval", str(world / "cli.yaml"), *runs, "--run", "cli1", "--baseline", "nope"], env=env)
    assert res.exit_code == 2 and "baseline: no run 'nope'" in res.stdout
    (world / "broken.yaml").write_text("gates: [unclosed\n")
    res = runner.invoke(app, ["eval", str(world / "broken.yaml"), *runs, "--run", "cli1"], env=env)
    assert res.exit_code == 2 and "not a YAML suite" in res.stdout
    write_suite(world, "nogates", "default", gates=[])
    res = runner.invoke(app, ["eval", str(world / "nogates.yaml"), *runs, "--run", "cli1"], env=env)
    assert res.exit_code == 2 and "defines no gates" in res.stdout
    write_suite(world, "typo", "default", gates=[{"metric": "fact_recal", "min": 0.5}])
    res = runner.invoke(app, ["eval", str(world / "typo.yaml"), *runs, "--run", "cli1"], env=env)
    out = " ".join(res.stdout.split())
    assert res.exit_code == 2 and "'fact_recal' are neither turn-table nor scorer columns" in out


def test_a_judge_column_nobody_scored_is_no_evidence_not_a_pass(world: Path) -> None:
    gates = [{"metric": "faithfulness", "min": 0.5}, {"metric": "lk_accuracy", "min": 0.5, "required": False}]
    write_suite(world, "judge", "default", gates=gates)
    with ModelStack(load_config(world / "config.yaml")) as stack:
        v = run_eval(world / "judge.yaml", run="base", runs_dir=world / "runs", stack=stack)
    assert not v.passed and {r.status for r in v.results if r.metric == "faithfulness"} == {"error"}
    assert {r.status for r in v.results if r.metric == "lk_accuracy"} == {"skipped"}
    with pytest.raises(EvalError, match="the baseline run is the run being checked"):
        run_eval(world / "judge.yaml", run="base", baseline="base", runs_dir=world / "runs")


def test_pytest_collects_one_item_per_bound_and_runs_the_suite_once(world: Path, tmp_path: Path) -> None:
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "conftest.py").write_text((REPO / "evals" / "conftest.py").read_text())
    suite = yaml.safe_load(write_suite(world, "pt", "bad").read_text())
    suite.update(dataset=str(world / "ds"), config=str(world / "config.yaml"))
    (evals / "pt.yaml").write_text(yaml.safe_dump(suite))
    junit, runs = tmp_path / "junit.xml", tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(evals),
        "-p",
        "no:cacheprovider",
        "-q",
        f"--junitxml={junit}",
        f"--eval-runs-dir={runs}",
        "--rootdir",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 1, out.stdout + out.stderr
    suite_el = ET.parse(junit).getroot().find("testsuite")
    assert suite_el is not None
    cases = {c.get("name"): c for c in suite_el.iter("testcase")}
    assert len(cases) == 10  # 5 gates x 2 strategies
    failed = sorted(n for n, c in cases.items() if c.find("failure") is not None)
    skipped = sorted(n for n, c in cases.items() if c.find("skipped") is not None)
    assert failed == ["mean fact_recall [cand]"]
    assert len(skipped) == 4 and all("vs baseline run" in n for n in skipped)  # no --eval-baseline
    assert "mean fact_recall [cand] failed: 0 < 0.9" in out.stdout
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 1  # one run for all ten items
    props = {p.get("name"): p.get("value") for p in cases["mean fact_recall [cand]"].iter("property")}
    assert props["status"] == "fail" and props["value"] == "0.0"


# -- the CI workflow ----------------------------------------------------------------------------------
def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", text, re.S)
    assert block, "README lost its 'Two commands' block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_workflow_parses_and_runs_the_readme_commands_and_the_eval() -> None:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "evals.yml").read_text())
    assert wf["name"] == "evals"
    triggers = wf.get("on", wf.get(True))  # PyYAML reads the `on:` key as True
    assert "pull_request" in triggers and "push" in triggers
    [job] = wf["jobs"].values()
    runs = [s["run"] for s in job["steps"] if "run" in s]
    commands = [line.strip() for r in runs for line in r.splitlines() if line.strip()]
    assert readme_commands() == ["make demo", "make test"]
    for cmd in readme_commands():
        assert cmd in commands, f"{cmd!r} is in the README but not in the workflow"
    assert any(re.match(r"\.venv/bin/workbench eval evals/ci\.yaml\b", c) for c in commands)
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and any("runs/" in s["with"]["path"] for s in uploads)
    assert all(s.get("if") == "always()" for s in uploads)  # the report is uploaded when the eval fails too
