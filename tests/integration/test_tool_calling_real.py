"""The booking demo's tool-calling endpoint on the real embedded model: a call made, recorded and run for real.

Why: the scripted endpoint proves the harness side deterministically (tests/unit/test_booking_demo.py: a scripted
``book`` call lands in the turn table and the SQLite store); this proves the model side, which no fake can: that
Qwen2.5-Coder-0.5B through llama.cpp's ``hermes-tools`` chat format (evals/configs/booking-models.yaml, the endpoint
evals/booking.yaml runs on) streams a structured tool call that livekit-plugins-openai reads, LiveKit runs, the
workbench records, and the booking store shows. One single-turn conversation of the booking dataset through
``plain``: temperature 0 and a fixed seed make the call the same every run (measured: docs/strategies.md, "Tools").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.models import ModelStack
from workbench.pipeline.agents import AgentFactory
from workbench.replay.tools import load_calls
from workbench.testing.worlds import sqlite_rows
from workbench.workflows import arun, load_run
from workbench.workflows.suite import load_suite

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "evals" / "booking.yaml"
# a busy machine is slow, not broken: a cold ~900-token prompt (instructions and four tool schemas) on two shared
# cores can pass the strategy's default 15 s first-chunk timeout
PATIENT = {"kind": "plain", "first_chunk_timeout_s": 90.0, "chunk_timeout_s": 60.0}


@pytest.mark.timeout(240)
async def test_the_embedded_model_cancels_a_booking_through_a_streamed_tool_call(tmp_path: Path) -> None:
    suite = load_suite(SUITE)
    cfg = suite.workbench_config()
    assert (cfg.llm.gguf, cfg.llm.chat_format) == ("qwen2.5-coder-0.5b", "hermes-tools")  # what the demo runs on
    db = tmp_path / "booking.sqlite"
    assert suite.agent is not None
    suite = suite.model_copy(
        update={
            "strategies": {"plain": PATIENT},
            # b005, one turn: "Please cancel my booking B-102."
            "conversations": suite.conversations.model_copy(update={"ids": ["b005"]}),
            "agent": AgentFactory(use=suite.agent.use, args={"db": str(db)}),
            "turn_timeout_s": 180.0,
        }
    )
    with ModelStack(cfg.model_copy(update={"state_dir": tmp_path / "state"})) as stack:
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    (row,) = load_run(res.path).to_dict("records")
    assert row["error_kind"] is None, row
    calls = load_calls(row["tool_calls"]) or []
    assert calls, f"no tool call recorded; the model answered {row['answer']!r}"
    first = calls[0]  # what the model does after reading the result is not asserted: the 0.5B may write more JSON
    assert (first["name"], first["arguments"], first["error"]) == ("cancel", {"booking_id": "B-102"}, None), calls
    assert first["output"].startswith("Cancelled B-102"), first
    assert [r["id"] for r in sqlite_rows(db, "SELECT id FROM bookings ORDER BY id")] == ["B-101", "B-103"]
    assert ("cancel", "B-102") in [(r["action"], r["booking_id"]) for r in sqlite_rows(db, "SELECT * FROM changes")]
