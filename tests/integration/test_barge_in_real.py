"""Barge-in on the embedded stack: the demo dataset's c047, replayed in real time (Silero, Whisper, Piper; the
extractive strategy, no LLM). The caller cuts the agent's answer short, then says "Okay." over the next one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from workbench.core.config import TurnConfig
from workbench.models import ModelStack
from workbench.workflows import Suite, arun
from workbench.workflows.runs import Run
from workbench.workflows.suite import Selection, VoiceOptions

DEMO = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo"


async def _replay(stack: ModelStack, runs: Path) -> pd.DataFrame:
    suite = Suite(
        dataset=DEMO,
        mode="voice",
        strategies={"extractive": "extractive"},
        conversations=Selection(ids=["c047"]),
        voice=VoiceOptions(variants=["piper"], turn_timeout_s=60.0),
    )
    res = await arun(suite, runs_dir=runs, stack=stack, progress=False)
    df = Run.load(res.path).rows.sort_values("turn_index").reset_index(drop=True)
    assert len(df) == 3 and df["error_kind"].isna().all()
    assert df["call_audio"].nunique() == 1 and df["call_offset_s"].is_monotonic_increasing  # one call, one clock
    return df


@pytest.mark.timeout(300)
async def test_the_agent_yields_to_a_caller_who_talks_over_it_and_to_a_transcribed_backchannel(
    stack: ModelStack, tmp_path: Path
) -> None:
    """By default (LiveKit's VAD interruption, no word minimum) the agent yields to "Sorry, just Saturdays,
    please." 1.5 s into its answer within the 0.5 s bound plus 0.5 s, and also to "Okay." (0.36 s of speech,
    under the bound): LiveKit stops the agent on any final transcript, and the row says it stopped for a
    backchannel, a false interruption. (``min_interruption_words`` changes that at a price: docs/latency.md;
    tests/unit/test_call_audio.py checks such a late yield's rows with known delays.)"""
    df = await _replay(stack, tmp_path / "runs")
    barge, okay = df.iloc[1], df.iloc[2]
    assert barge["yielded"] and not barge["false_interruption"]
    assert 0 < barge["yield_s"] <= TurnConfig().min_interruption_duration + 0.5
    assert "saturday" in barge["transcript"].lower() and barge["answer"]
    assert okay["yielded"] and okay["false_interruption"] and okay["transcript"].strip(" .").lower() == "okay"
