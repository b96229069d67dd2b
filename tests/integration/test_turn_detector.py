"""``turn.mode: turn_detector`` end to end: LiveKit's local audio end-of-turn model ends real callers' turns in a
real-time replay on the embedded stack (Silero, Whisper, Piper; the extractive strategy needs no LLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workbench.core.config import TurnConfig, WorkbenchConfig
from workbench.models import ModelStack
from workbench.workflows import Suite, arun
from workbench.workflows.runs import Run
from workbench.workflows.suite import Selection, VoiceOptions

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
async def test_the_turn_detector_mode_ends_recorded_callers_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_guard: Any
) -> None:
    from livekit.agents.inference.eot.base import _BaseStreamingTurnDetectorStream

    predictions: list[str] = []
    predict = _BaseStreamingTurnDetectorStream.predict

    def counted(self: Any) -> Any:
        predictions.append(str(self.model))
        return predict(self)

    monkeypatch.setattr(_BaseStreamingTurnDetectorStream, "predict", counted)
    config = WorkbenchConfig(state_dir=tmp_path / "state", turn=TurnConfig(mode="turn_detector"))
    suite = Suite(
        dataset=ROOT / "datasets" / "dianachat_demo",
        mode="voice",
        strategies={"extractive": "extractive"},
        conversations=Selection(ids=["c001"]),
        voice=VoiceOptions(variants=["piper"], turn_timeout_s=60.0),
    )
    with ModelStack(config) as stack:
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    run = Run.load(res.path)
    df = run.rows
    assert len(df) == 1 and df["error_kind"].isna().all()
    # the local model (not the cloud one) was asked, and every turn ended once, after the caller finished
    assert predictions and set(predictions) == {"turn-detector-v1-mini"}
    assert (df["user_turns"] == 1).all() and not df["cut_off"].any()
    assert (df["eou_delay_s"] > 0).all() and (df["wer"] < 0.2).all() and df["v2v_s"].notna().all()
    assert run.manifest["workbench_config"]["turn"]["mode"] == "turn_detector"
