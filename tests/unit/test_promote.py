"""`workbench promote`: refuses failing or missing evidence, writes a complete file for a passing strategy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from workbench.analysis.gates import GateSpecError, evaluate_gates, parse_gates
from workbench.cli import app
from workbench.core.store import MANIFEST_FILE, TURNS_FILE, typed_frame
from workbench.pipeline.promoted import load_promoted
from workbench.workflows.promote import PromotionRefused, promote

GATES = [
    {"metric": "llm_ttfc_s", "stat": "p90", "max": 1.0},
    {"metric": "error_rate", "max": 0.1},
    {"metric": "fact_recall", "stat": "mean", "min": 0.5},
]
PLAIN_TTFC = [0.2, 0.3, 0.4, 0.5, 0.6, 0.3, 0.2, 0.4, 0.5, 0.9]
SLOW_TTFC = [1.2, 1.5, 0.9, 2.0, 1.1, 1.3, 1.4, 1.6, 1.0, 1.8]


def _rows(strategy: str, ttfc: list[float], errors: int, recall: float) -> list[dict]:
    return [
        {
            "run_id": "r1",
            "strategy": strategy,
            "mode": "text",
            "conversation_id": f"c{i // 2}",
            "turn_index": i % 2,
            "repetition": 0,
            "voice": "",
            "user_text": "q",
            "answer": "a",
            "llm_ttfc_s": t,
            "error_kind": "timeout" if i < errors else None,
            "fact_recall": recall,
        }
        for i, t in enumerate(ttfc)
    ]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A finished run (manifest + turn rows, the run store's layout) with a good and a slow strategy."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    manifest = {
        "run_id": "r1",
        "name": "clinic",
        "status": "complete",
        "created_at": "2026-11-20T10:00:00+00:00",
        "dataset": str(tmp_path / "datasets" / "demo"),
        "suite": {
            "name": "clinic",
            "strategies": {"plain": "plain", "slow": {"kind": "plain", "history_tokens": 256}, "rag": {"kind": "rag"}},
            "gates": GATES,
        },
        "workbench_config": {"llm": {"kind": "local", "gguf": "smollm2", "max_tokens": 64}},
        "git_commit": "abc123",
        "git_dirty": False,
        "versions": {"livekit-agents": "1.8.6"},
        "machine": {"cpus": 2},
    }
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))
    rows = _rows("plain", PLAIN_TTFC, 0, 0.8) + _rows("slow", SLOW_TTFC, 2, 0.7)
    typed_frame(rows).to_parquet(run / TURNS_FILE, index=False)
    return tmp_path / "runs"


def _promote(runs: Path, strategy: str, **kw):
    return promote("r1", strategy, runs_dir=runs, out=runs.parent / "worker" / "promoted.yaml", **kw)


def test_refuses_a_failing_strategy_and_says_which_gate(runs: Path) -> None:
    with pytest.raises(PromotionRefused) as exc:
        _promote(runs, "slow")
    msg = str(exc.value)
    p90 = np.quantile(SLOW_TTFC, 0.9)
    assert f"p90 llm_ttfc_s failed: {p90:.4g} > 1" in msg
    assert "error_rate failed: 0.2 > 0.1" in msg
    assert "--force" in msg and "fact_recall" not in msg  # the passing gate is not a problem
    assert not (runs.parent / "worker" / "promoted.yaml").exists()


def test_refuses_when_the_evidence_is_missing(runs: Path, tmp_path: Path) -> None:
    suite = tmp_path / "voice-gates.yaml"
    suite.write_text(
        yaml.safe_dump(
            {"gates": [{"metric": "v2v_s", "stat": "p90", "max": 1.5}, {"metric": "wer_strict", "max": 0.2}]}
        )
    )
    with pytest.raises(PromotionRefused) as exc:
        _promote(runs, "plain", suite_path=suite)
    msg = str(exc.value)
    assert "p90 v2v_s: no evidence: 'v2v_s' is empty on all 10 rows" in msg
    assert "no evidence: column 'wer_strict' is not in the run" in msg
    assert all(g.missing and not g.passed for g in exc.value.gates)

    with pytest.raises(PromotionRefused, match=r"no evidence: the run has no turn rows for 'rag'"):
        _promote(runs, "rag")

    suite.write_text("name: nothing-to-check\n")
    with pytest.raises(PromotionRefused, match="defines no gates"):
        _promote(runs, "plain", suite_path=suite)


def test_refuses_an_unfinished_run(runs: Path) -> None:
    m = json.loads((runs / "r1" / MANIFEST_FILE).read_text())
    (runs / "r1" / MANIFEST_FILE).write_text(json.dumps({**m, "status": "interrupted"}))
    with pytest.raises(PromotionRefused, match="'interrupted', not complete"):
        _promote(runs, "plain")


def test_writes_a_complete_file_for_a_passing_strategy(runs: Path) -> None:
    when = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    result = _promote(runs, "plain", now=when)
    assert not result.forced and not result.problems
    p = load_promoted(result.path)
    assert p.strategy == {"kind": "plain", "name": "plain"}
    assert p.agent.instructions and p.agent.speech_text["replacements"]["Dr."] == "Doctor"
    assert p.config == {"llm": {"kind": "local", "gguf": "smollm2", "max_tokens": 64}}
    ev = p.evidence
    assert (ev["run_id"], ev["git_commit"], ev["run_created_at"]) == ("r1", "abc123", "2026-11-20T10:00:00+00:00")
    assert ev["dataset"].endswith("datasets/demo") and ev["promoted_at"] == when.isoformat()
    assert ev["suite"] == {"name": "clinic", "gates_from": "run manifest", "gates": GATES}
    assert ev["passed"] is True and ev["forced"] is False and ev["problems"] == []
    gates = {g["name"]: g for g in ev["gates"]}
    assert set(gates) == {"p90 llm_ttfc_s", "error_rate", "mean fact_recall"}
    assert gates["p90 llm_ttfc_s"]["value"] == pytest.approx(np.quantile(PLAIN_TTFC, 0.9))
    assert gates["p90 llm_ttfc_s"]["passed"] and gates["p90 llm_ttfc_s"]["n"] == 10
    assert gates["mean fact_recall"] == {**gates["mean fact_recall"], "value": pytest.approx(0.8), "op": ">="}
    m = ev["metrics"]
    assert (m["turns"], m["conversations"], m["error_rate"], m["modes"]) == (10, 5, 0.0, ["text"])
    assert m["llm_ttfc_s"]["p50"] == pytest.approx(np.median(PLAIN_TTFC), abs=1e-4)
    assert ev["versions"] == {"livekit-agents": "1.8.6"}


def test_force_promotes_and_records_the_override(runs: Path) -> None:
    result = _promote(runs, "slow", force=True)
    text = result.path.read_text()
    assert "FORCED despite failing or missing evidence" in text.splitlines()[1]
    p = load_promoted(result.path)
    assert p.strategy == {"kind": "plain", "history_tokens": 256, "name": "slow"}
    assert p.evidence["forced"] is True and p.evidence["passed"] is False
    assert any(x.startswith("p90 llm_ttfc_s failed") for x in p.evidence["problems"])
    assert p.evidence["metrics"]["error_rate"] == 0.2


def test_retrieval_strategies_get_the_runs_knowledge(runs: Path) -> None:
    df = typed_frame(_rows("rag", PLAIN_TTFC, 0, 0.9))  # a run where rag, too, has evidence
    old = __import__("pandas").read_parquet(runs / "r1" / TURNS_FILE)
    typed_frame([*old.to_dict("records"), *df.to_dict("records")]).to_parquet(runs / "r1" / TURNS_FILE)
    p = load_promoted(_promote(runs, "rag").path)
    assert p.strategy["knowledge"] == str(runs.parent / "datasets" / "demo" / "knowledge")
    assert p.strategy["kind"] == "rag" and p.strategy["name"] == "rag"


def test_unknown_strategy_and_bad_gates_are_clear_errors(runs: Path) -> None:
    with pytest.raises(KeyError, match="'nope' is not in run r1 \\(it has: plain, slow, rag\\)"):
        _promote(runs, "nope")
    with pytest.raises(GateSpecError, match="exactly one of max: or min:"):
        parse_gates([{"metric": "wer", "max": 0.1, "min": 0.0}])
    with pytest.raises(GateSpecError, match="stat"):
        parse_gates([{"metric": "wer", "stat": "p42", "max": 0.1}])


def test_evaluate_gates_scopes_by_mode_and_strategy(runs: Path) -> None:
    import pandas as pd

    df = pd.read_parquet(runs / "r1" / TURNS_FILE)
    suite = {
        "strategies": {"plain": "plain", "slow": "plain"},
        "gates": [
            {"metric": "llm_ttfc_s", "stat": "max", "max": 1.0, "strategies": ["slow"]},
            {"metric": "llm_ttfc_s", "stat": "median", "max": 1.0, "mode": "voice"},
        ],
    }
    results = evaluate_gates(df, {}, suite)
    assert [(r.name, r.strategy) for r in results] == [
        ("max llm_ttfc_s", "slow"),
        ("median llm_ttfc_s (voice)", "plain"),
        ("median llm_ttfc_s (voice)", "slow"),
    ]
    assert results[0].value == 2.0 and not results[0].passed and results[0].detail == "2 > 1"
    assert results[1].missing and "in voice mode" in results[1].detail


def test_cli_refuses_with_exit_1_and_promotes_with_exit_0(runs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "w" / "promoted.yaml"
    args = ["promote", "r1", "--runs-dir", str(runs), "--out", str(out)]
    res = runner.invoke(app, [*args, "--strategy", "slow"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "refusing to promote 'slow'" in res.stdout and not out.exists()
    res = runner.invoke(app, [*args, "--strategy", "plain"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "promoted plain from run r1" in res.stdout
    assert load_promoted(out).strategy_name == "plain"
    res = runner.invoke(app, ["promote", "nope", "--strategy", "plain", "--runs-dir", str(runs)])
    assert res.exit_code == 2 and "no run 'nope'" in res.stdout


MEASURED_MODELS = {
    "llm": {"gguf": "smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "bytes": 98362432, "sha256": "b1" * 32},
    "stt": {"model": "tiny.en", "file": "model.bin", "bytes": 75538270, "sha256": "c2" * 32},
}


def test_promote_writes_the_versions_and_model_hashes_the_run_measured(runs: Path) -> None:
    m = json.loads((runs / "r1" / MANIFEST_FILE).read_text())
    versions = {
        "dianachat-workbench": "0.1.0",
        "livekit-agents": "1.8.6",
        "livekit": "1.1.20",
        "openai": "2.54.0",
        "httpx2": "2.16.0",
        "livekit-plugins-openai": "1.8.6",
        "livekit-plugins-silero": "1.8.6",
    }
    m.update(versions=versions, workbench_version="0.1.0", models=MEASURED_MODELS)
    (runs / "r1" / MANIFEST_FILE).write_text(json.dumps(m))
    result = _promote(runs, "plain")
    raw = yaml.safe_load(result.path.read_text())
    assert list(raw).index("measured_with") < list(raw).index("evidence")  # read before the long evidence
    assert raw["measured_with"] == {"workbench": "0.1.0", "packages": versions, "models": MEASURED_MODELS}
    p = load_promoted(result.path)  # read back
    assert p.measured_with == raw["measured_with"]
    assert p.measured_packages() == versions and p.measured_models() == MEASURED_MODELS


def test_promote_from_a_run_without_versions_records_none(runs: Path) -> None:
    m = json.loads((runs / "r1" / MANIFEST_FILE).read_text())
    del m["versions"]
    (runs / "r1" / MANIFEST_FILE).write_text(json.dumps(m))
    p = load_promoted(_promote(runs, "plain").path)
    assert p.measured_with is None and p.measured_packages() is None and p.measured_models() is None


def test_an_older_promoted_file_falls_back_to_its_evidence_versions(tmp_path: Path) -> None:
    f = tmp_path / "promoted.yaml"
    f.write_text("strategy: {kind: plain}\nevidence: {run_id: r0, versions: {livekit-agents: 1.8.6}}\n")
    p = load_promoted(f)
    assert p.measured_with is None and p.measured_packages() == {"livekit-agents": "1.8.6"}


def test_cli_promote_says_what_the_strategy_was_measured_with(runs: Path, tmp_path: Path) -> None:
    from workbench.models.versions import installed_version

    out = tmp_path / "w" / "promoted.yaml"
    args = ["promote", "r1", "--runs-dir", str(runs), "--out", str(out), "--strategy", "plain"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "measured with livekit-agents 1.8.6, openai not recorded" in res.stdout
    assert "needs --allow-version-mismatch" in res.stdout
    assert f"this worker has livekit-agents {installed_version('livekit-agents')}" in res.stdout
