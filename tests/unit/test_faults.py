"""Fault injection: every endpoint and speech fault x strategy, against a scripted endpoint and fake speech.

The full suite (``evals/faults.yaml``) runs in ``make test`` through the eval runner (``pytest evals/``);
these tests check the numbers behind its verdict: the recorded kind, the fallback, when the caller
heard the recovery, that the session went on, and that the table flags what it should.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from workbench.analysis.gates import parse_gates
from workbench.cli import app
from workbench.core.metrics import METRICS
from workbench.scoring import available_scorers, score_run
from workbench.scoring.faults import (
    ALL_FAULTS,
    ENDPOINT_FAULTS,
    EXPECTED_KIND,
    FAULT_TURN,
    PARTIAL_FAULTS,
    FaultScorer,
    fault_in,
    marker,
)
from workbench.workflows import load_run
from workbench.workflows.eval import run_eval
from workbench.workflows.faults import arun_faults, fault_table
from workbench.workflows.runs import Run
from workbench.workflows.suite import FaultSuite, Suite, load_suite, suite_from_dict

SUITE_FILE = Path(__file__).resolve().parents[2] / "evals" / "faults.yaml"


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("CRITICAL", logger="livekit.agents")  # tracebacks of the injected STT/TTS failures


def shipped_suite(**changes: object) -> FaultSuite:
    """The shipped suite; narrowed to some ``faults``, it leaves out the barge-in checks unless they are named."""
    suite = load_suite(SUITE_FILE)
    assert isinstance(suite, FaultSuite)
    if "faults" in changes:
        changes.setdefault("turn_taking", [])
    return suite.model_copy(update=changes)


def test_a_fault_suite_is_a_suite_loaded_like_any_other() -> None:
    suite = load_suite(SUITE_FILE)
    assert isinstance(suite, FaultSuite) and isinstance(suite, Suite) and suite.kind == "faults"
    assert type(load_suite(SUITE_FILE.parent / "demo.yaml")) is Suite
    # what the replay runner reads is the Suite's own fields
    assert suite.strategy_config("plain") == {"kind": "plain", "name": "plain", **suite.strategies["plain"]}
    assert suite.concurrency == 8 and suite.turn_timeout_s == 10 and suite.baseline == "plain"
    # a manifest's dump comes back as the same model
    again = suite_from_dict(suite.model_dump(mode="json"))
    assert isinstance(again, FaultSuite) and again == suite
    with pytest.raises(ValueError, match="voice_faults"):  # a replay suite does not take fault fields
        Suite.model_validate({"voice_faults": ["stt_error"]})


def test_fault_ok_is_a_registered_scorer_that_says_higher_is_better() -> None:
    assert available_scorers()["faults"] is FaultScorer
    assert FaultScorer.columns == ("fault", "fault_ok")
    assert METRICS.metric("fault_ok").direction == "higher"  # type: ignore[union-attr]
    assert METRICS.metric("fault").direction is None  # type: ignore[union-attr]  (a label, not a score)


def test_the_shipped_suite_covers_every_fault_with_and_without_a_fallback() -> None:
    suite = shipped_suite()
    assert set(suite.faults) == set(ALL_FAULTS)
    assert {"stt_error", "tts_error"} <= set(suite.voice_faults)
    assert suite.strategies["plain"]["kind"] == "plain" and "fallback" not in suite.strategies["plain"]
    assert any(isinstance(c, dict) and c.get("fallback") for c in suite.strategies.values())
    assert [g.metric for g in parse_gates(suite.gates)] == ["fault_ok"]
    # a trickle must be slower than the strategies' between-chunk timeout, or it is no fault at all
    assert all(suite.timing.trickle_gap_s > c["chunk_timeout_s"] for c in suite.strategies.values())


def test_markers_name_faults_and_unknown_faults_are_refused() -> None:
    assert [fault_in(f"Book me in ({marker(f)})?") for f in ALL_FAULTS] == list(ALL_FAULTS)
    assert fault_in("no fault here") is None and fault_in("fault-nonsense") is None
    with pytest.raises(ValueError, match="unknown fault"):
        FaultSuite(faults=["http_503"])
    with pytest.raises(ValueError, match="not in faults"):
        FaultSuite(faults=["hang"], voice_faults=["stt_error"])
    with pytest.raises(ValueError, match="not a fault suite"):
        asyncio.run(arun_faults(SUITE_FILE.parent / "demo.yaml"))


async def test_every_endpoint_fault_engages_the_fallback_within_the_timeout(tmp_path: Path) -> None:
    suite = shipped_suite(faults=list(ENDPOINT_FAULTS), voice_faults=[])
    res = await arun_faults(suite, runs_dir=tmp_path)
    table = res.table.set_index(["fault", "strategy"])
    assert res.passed, res.table[["fault", "strategy", "problems"]]
    assert len(table) == len(ENDPOINT_FAULTS) * 2 and set(table["mode"]) == {"text"}
    fc = {n: c["first_chunk_timeout_s"] for n, c in suite.strategies.items()}
    for fault in ENDPOINT_FAULTS:
        for strategy, fallback in (("plain", "apology"), ("plain_fallback", "backup")):
            r = table.loc[(fault, strategy)]
            assert r["error_kind"] == EXPECTED_KIND[fault], (fault, strategy)
            assert r["fallback"] == fallback and r["partial"] == (fault in PARTIAL_FAULTS), (fault, strategy)
            assert r["recovery_s"] <= r["budget_s"] and r["next_turn_ok"], (fault, strategy)
            if fault in PARTIAL_FAULTS:  # the caller heard the primary's first words, then the recovery
                assert r["heard_s"] < r["recovery_s"]
            else:  # nothing came before the fault: the first words heard are the recovery's
                assert r["heard_s"] == pytest.approx(r["recovery_s"], abs=0.002)
    # a hang is given up at the first-chunk timeout, not before; an HTTP error without waiting for it
    # (absolute times stay loose: 18 sessions share two busy cores here)
    assert fc["plain"] <= table.loc[("hang", "plain"), "recovery_s"] <= table.loc[("hang", "plain"), "budget_s"]
    assert table.loc[("http_500", "plain"), "recovery_s"] < fc["plain"]
    assert table.loc[("trickle", "plain"), "recovery_s"] > suite.strategies["plain"]["chunk_timeout_s"]

    df = load_run(res.path)
    assert len(df) == len(ENDPOINT_FAULTS) * 2 * 3 and (df["fault_ok"] == 1.0).all()
    fault_rows = df[df["turn_index"] == FAULT_TURN]
    # nothing measured is lost: what the primary said before a mid-answer fault stays in the answer
    cut = fault_rows[(fault_rows["conversation_id"] == "fault-cut") & (fault_rows["strategy"] == "plain_fallback")]
    assert cut["answer"].iloc[0].startswith("You said:") and cut["answer"].iloc[0].endswith("how can I help?")
    healthy = df[df["turn_index"] != FAULT_TURN]
    assert healthy["error_kind"].isna().all() and healthy["answer"].str.startswith("You said:").all()
    manifest = Run.load(res.path).manifest
    assert manifest["status"] == "complete" and manifest["suite"]["faults"] == list(ENDPOINT_FAULTS)
    assert [g.status for g in res.gates] == ["pass", "pass"]
    assert json.loads((res.path / "verdict.json").read_text())["passed"]  # judged like `workbench eval` judges


async def test_speech_faults_in_voice_are_recorded_without_hanging_and_the_call_goes_on(tmp_path: Path) -> None:
    suite = shipped_suite(
        faults=["stt_error", "tts_error", "http_500"],
        voice_faults=["stt_error", "tts_error", "http_500"],
        strategies={"plain_fallback": shipped_suite().strategies["plain_fallback"]},
    )
    res = await arun_faults(suite, runs_dir=tmp_path)
    assert res.passed, res.table[["fault", "mode", "problems"]]
    df = load_run(res.path)
    voice = df[df["mode"] == "voice"].set_index(["conversation_id", "turn_index"])
    assert len(voice) == 9 and voice["realtime"].all()

    stt = voice.loc[("fault-stt_error", FAULT_TURN)]
    assert stt["error_kind"] == "stt_error" and stt["error"] == "scripted STT failure"
    assert stt["transcript"] == "" and stt["answer"] == "" and math.isnan(stt["v2v_s"])
    tts = voice.loc[("fault-tts_error", FAULT_TURN)]
    assert tts["error_kind"] == "tts_error" and tts["llm_ttfc_s"] < 1.0 and math.isnan(tts["v2v_s"])
    assert tts["transcript"] == "Can I book a check-up with Doctor Lee (fault-tts-error)?"
    # no hang: the failed turn ends within a couple of seconds, far below the 10 s turn timeout
    for conv in ("fault-stt_error", "fault-tts_error"):
        gap = pd.Timestamp(voice.loc[(conv, FAULT_TURN + 1), "started_at"]) - pd.Timestamp(
            voice.loc[(conv, FAULT_TURN), "started_at"]
        )
        assert gap.total_seconds() < 3.0, (conv, gap)
        after = voice.loc[(conv, FAULT_TURN + 1)]
        assert pd.isna(after["error_kind"]) and after["answer"] == "You said: Thanks, and where do I park?"
    # an endpoint fault in a call: the caller hears the backup's first words, end of speech to first audio
    http = voice.loc[("fault-http_500", FAULT_TURN)]
    assert http["error_kind"] == "http_500" and http["fallback"] == "backup"
    assert http["answer"] == "This is the backup line, how can I help?"
    assert 0 < http["recovery_s"] < 0.5 and http["recovery_s"] < http["v2v_s"] < 2.0


def _rows(fault: str, fault_row: dict[str, object], turns: int = 3, mode: str = "text") -> pd.DataFrame:
    rows = []
    for t in range(turns):
        base = {
            "strategy": "s",
            "mode": mode,
            "voice": "",
            "conversation_id": f"fault-{fault}",
            "repetition": 0,
            "turn_index": t,
            "tags": ["faults", f"fault:{fault}"],
            "answer": "You said: ok",
            "error_kind": None,
            "fallback": None,
            "partial": False,
            "llm_ttfc_s": 0.1,
            "recovery_s": None,
        }
        rows.append({**base, **(fault_row if t == FAULT_TURN else {})})
    return pd.DataFrame(rows)


STRATS = {"s": {"kind": "plain", "first_chunk_timeout_s": 1.0, "chunk_timeout_s": 0.5}}
GOOD_HANG = {"error_kind": "timeout", "fallback": "apology", "llm_ttfc_s": 1.01, "recovery_s": 1.01, "answer": "Sorry"}


@pytest.mark.parametrize(
    ("fault", "fault_row", "turns", "problem"),
    [
        ("hang", GOOD_HANG, 3, ""),
        ("hang", {**GOOD_HANG, "error_kind": "connection"}, 3, "error_kind connection, expected timeout"),
        ("hang", {**GOOD_HANG, "fallback": None}, 3, "no fallback or apology"),
        ("hang", {**GOOD_HANG, "recovery_s": 2.5}, 3, "recovered after 2.50 s > 2.00 s"),
        ("hang", GOOD_HANG, 2, "2 of 3 turn rows stored"),
        ("cut", {**GOOD_HANG, "error_kind": "stream_cut"}, 3, "partial=False"),
        ("http_500", {"error_kind": None}, 3, "error_kind none, expected http_500"),
    ],
)
def test_fault_table_flags_each_way_a_fault_can_be_mishandled(
    fault: str, fault_row: dict[str, object], turns: int, problem: str
) -> None:
    table = fault_table(_rows(fault, fault_row, turns), STRATS)
    assert len(table) == 1
    assert table["problems"].iloc[0] == problem if not problem else problem in table["problems"].iloc[0]
    assert table["passed"].iloc[0] == (not problem)
    assert table["budget_s"].iloc[0] == pytest.approx(2.0)


def test_fault_table_flags_a_session_that_did_not_go_on_and_ignores_other_rows() -> None:
    df = _rows("hang", GOOD_HANG)
    df.loc[2, ["error_kind", "answer"]] = ["no_reply", ""]
    other = _rows("hang", {}).assign(tags=[["demo"]] * 3, conversation_id="c1")
    table = fault_table(pd.concat([df, other], ignore_index=True), STRATS)
    assert len(table) == 1 and not table["next_turn_ok"].iloc[0] and not table["passed"].iloc[0]
    assert "turn 2 failed (no_reply)" in table["problems"].iloc[0]
    # speech faults cannot happen in text mode: those conversations are healthy controls there
    control = fault_table(_rows("stt_error", {}), STRATS)
    assert control["outcome"].iloc[0].startswith("control") and control["passed"].iloc[0]
    assert fault_table(pd.DataFrame(), STRATS).empty


def test_the_faults_scorer_scores_fault_conversations_and_skips_other_runs() -> None:
    df = pd.concat([_rows("hang", GOOD_HANG), _rows("cut", {"error_kind": None})], ignore_index=True)
    out = score_run(df, ["faults"])
    assert out["fault"].tolist() == ["hang"] * 3 + ["cut"] * 3
    assert out["fault_ok"].tolist() == [1.0] * 3 + [0.0] * 3
    outcome = out.attrs["scoring"]["scorers"][0]
    assert outcome["status"] == "ok" and "recovery times not checked" in outcome["reason"]  # no answer key here
    other = score_run(_rows("hang", {}).assign(tags=[["demo"]] * 3), ["faults"])
    assert "fault_ok" not in other.columns
    assert other.attrs["scoring"]["scorers"][0]["status"] == "skipped"


async def test_workbench_eval_runs_a_fault_suite_also_from_inside_an_event_loop(tmp_path: Path) -> None:
    """``run_eval`` on a fault suite goes through ``run_faults``; called here with this test's loop running
    (as in a notebook), the run gets its own loop in a thread instead of failing in ``asyncio.run``."""
    suite = shipped_suite(faults=["http_500"], voice_faults=[])
    path = tmp_path / "f.yaml"
    path.write_text(
        yaml.safe_dump(suite.model_dump(mode="json", include={"kind", "faults", "voice_faults", "strategies", "gates"}))
    )
    asyncio.get_running_loop()
    verdict = run_eval(path, runs_dir=tmp_path / "runs")
    assert verdict.passed and [r.status for r in verdict.results] == ["pass", "pass"]
    run = Run.load(verdict.run_path)
    assert run.manifest["suite"]["kind"] == "faults" and run.manifest["eval"]["suite_path"] == str(path)
    assert (run.rows["fault_ok"] == 1.0).all()
    assert {o["name"]: o["status"] for o in run.scoring["scorers"]} == {"faults": "ok"}


def test_cli_faults_prints_the_table_and_fails_a_strategy_that_cannot_recover(tmp_path: Path) -> None:
    spec = {
        "kind": "faults",
        "faults": ["http_500", "refuse"],
        "voice_faults": [],
        # no fallback and no apology: the turn fails loudly instead of being covered
        "strategies": {"bare": {"kind": "plain", "apology": None}, "plain": {"kind": "plain"}},
    }
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = CliRunner().invoke(app, ["faults", str(path), "--runs-dir", str(tmp_path / "runs")], env={"COLUMNS": "200"})
    assert out.exit_code == 1, out.output
    assert "FAIL http_500 x bare (text): no fallback or apology" in out.output
    fails = [line for line in out.output.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 2 and fails[1].startswith("FAIL refuse x bare (text)")  # plain's apology covers both
    bad = CliRunner().invoke(app, ["faults", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "cannot run the fault suite" in bad.output


async def test_a_tts_failure_after_the_first_sentence_is_recorded_with_what_was_heard(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from workbench.faults.endpoint import Script, ScriptedEndpoint
    from workbench.faults.speech import FailingTTS, tone
    from workbench.workflows import Suite, arun
    from workbench.workflows.faults import FaultStack, fault_config
    from workbench.workflows.suite import VoiceOptions

    ds = tmp_path / "ds"
    (ds / "audio").mkdir(parents=True)
    tones, turns = {}, []
    for t in range(2):
        tones[400.0 + 40 * t] = f"question {t}"
        pcm = np.concatenate([np.zeros(1600), tone(400.0 + 40 * t, 0.4), np.zeros(3200)]).astype(np.float32)
        sf.write(ds / f"audio/{t}.wav", pcm, 16000, subtype="PCM_16")
        turns.append({"user": f"question {t}", "audio": {"tone": f"audio/{t}.wav"}})
    (ds / "conversations.jsonl").write_text(json.dumps({"id": "c", "turns": turns}) + "\n")
    with ScriptedEndpoint(Script(ttft_s=0.05, text="First sentence here. Second sentence follows now.")) as ep:
        stack = FaultStack(fault_config(ep.base_url, ep.base_url, tmp_path / "state"), tones)
        tts = FailingTTS(0.05, fail_on={1})  # turn 0: the second sentence's request fails, the first was spoken
        stack.tts = lambda kind=None: tts  # type: ignore[method-assign]
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["tone"], turn_timeout_s=10))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    df = load_run(res.path).set_index("turn_index")
    assert df.loc[0, "error_kind"] == "tts_error" and df.loc[0, "v2v_s"] < 1.5  # the first sentence was heard
    assert 0 < df.loc[0, "agent_audio_s"] < df.loc[1, "agent_audio_s"]  # ... and only it
    assert pd.isna(df.loc[1, "error_kind"]) and tts.failures == 1


async def test_turn_taking_checks_yield_to_a_barge_in_and_talk_through_noise(tmp_path: Path) -> None:
    """The shipped suite's barge-in conversations, alone: the agent yields to the caller in time, talks through
    a short noise burst, and the call goes on in both."""
    assert shipped_suite().turn_taking == ["barge_in", "noise"]
    strategies = {"plain": shipped_suite().strategies["plain"]}
    suite = shipped_suite(
        faults=[], voice_faults=[], turn_taking=["barge_in", "noise"], strategies=strategies, gates=[]
    )
    res = await arun_faults(suite, runs_dir=tmp_path)
    assert res.passed, res.table[["fault", "mode", "problems"]]
    voice = res.table[res.table["mode"] == "voice"].set_index("fault")
    assert voice.loc["barge_in", "outcome"].startswith("yielded after") and voice.loc["barge_in", "budget_s"] == 1.0
    assert voice.loc["noise", "outcome"] == "talked through"
    df = load_run(res.path)
    noise = df[(df["mode"] == "voice") & (df["conversation_id"] == "fault-noise")].set_index("turn_index")
    assert noise.loc[FAULT_TURN, "answer"] == "" and not noise.loc[FAULT_TURN, "yielded"]
    assert noise.loc[FAULT_TURN + 1, "answer"] == "You said: Thanks, and where do I park?"


@pytest.mark.parametrize(
    ("fault", "fault_row", "problem"),
    [
        ("barge_in", {"yielded": True, "yield_s": 0.55}, ""),
        ("barge_in", {"yielded": False, "yield_s": None}, "the agent did not yield (yielded=False)"),
        ("barge_in", {"yielded": True, "yield_s": 1.4}, "yielded after 1.4 s > 1.00 s"),
        ("noise", {"yielded": False, "answer": ""}, ""),
        ("noise", {"yielded": True, "false_interruption": True, "answer": ""}, "false interruption"),
    ],
)
def test_turn_taking_verdicts_flag_a_late_or_missing_yield_and_a_false_interruption(
    fault: str, fault_row: dict[str, object], problem: str
) -> None:
    table = fault_table(_rows(fault, fault_row, mode="voice"), STRATS)
    (verdict,) = table.to_dict("records")
    assert verdict["passed"] == (problem == ""), verdict
    assert problem in verdict["problems"]
