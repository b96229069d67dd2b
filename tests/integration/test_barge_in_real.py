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
async def test_the_agent_yields_to_a_caller_who_talks_over_it_and_a_backchannel_needs_a_word_bound(
    stack: ModelStack, tmp_path: Path
) -> None:
    """By default (LiveKit's VAD interruption, no word minimum) the agent yields to "Sorry, just Saturdays,
    please." 1.5 s into its answer within the 0.5 s bound plus 0.5 s, and also to "Okay.": LiveKit stops the
    agent on any final transcript, and the row says it stopped for a backchannel (a false interruption). With
    ``min_interruption_words: 2`` it talks through "Okay." but over a batch STT yields to the real barge-in only
    once that is transcribed, after the caller's whole sentence: later than by default."""
    default = await _replay(stack, tmp_path / "default")
    worded_config = stack.config.model_copy(
        update={"turn": stack.config.turn.model_copy(update={"min_interruption_words": 2})}
    )
    with ModelStack(worded_config) as worded_stack:
        worded = await _replay(worded_stack, tmp_path / "worded")
    for df in (default, worded):
        barge = df.iloc[1]
        assert barge["yielded"] and not barge["false_interruption"] and barge["yield_s"] > 0
        assert "saturday" in barge["transcript"].lower() and barge["answer"]
    assert default.iloc[1]["yield_s"] <= TurnConfig().min_interruption_duration + 0.5
    # the sentence is 2 s long: with the word bound the agent hears it out (Whisper runs after it ends)
    assert worded.iloc[1]["yield_s"] > max(default.iloc[1]["yield_s"] + 0.5, 1.5)
    okay_default, okay_worded = default.iloc[2], worded.iloc[2]
    assert okay_default["yielded"] and okay_default["false_interruption"]
    assert not okay_worded["yielded"] and not okay_worded["false_interruption"]
