"""Importing a LiveKit session report (built with livekit's own SessionReport) and its recording."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from livekit.agents import AgentSession, llm
from livekit.agents.voice.report import SessionReport
from typer.testing import CliRunner

from workbench.cli import app
from workbench.replay.audio import load_audio
from workbench.replay.dataset import load_dataset, validate_dataset
from workbench.replay.importer import SessionImportError, import_session, session_turns

T0 = 1_790_000_000.0  # recording start, wall clock
RATE = 48000
USER_HZ, AGENT_HZ = 300.0, 1200.0
# (start, stop) of user speech, seconds into the recording
SPEECH = [(1.0, 2.5), (6.0, 7.0), (7.5, 8.2), (12.0, 13.0)]
AGENT = [(3.2, 5.5), (9.0, 11.0)]


def _session_report(tmp_path: Path, *, with_times: bool = True) -> Path:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are the clinic receptionist.")
    ctx.add_message(role="assistant", content="Hello, DianaChat clinic, how can I help?")

    def user(text: str, span: tuple[float, float] | None) -> None:
        msg = ctx.add_message(role="user", content=text)
        if span and with_times:
            msg.metrics = {"started_speaking_at": T0 + span[0], "stopped_speaking_at": T0 + span[1]}

    user("When do you open on Monday?", SPEECH[0])
    ctx.add_message(role="assistant", content="We open at 8 am.")
    user("And parking,", SPEECH[1])
    user("is it free?", SPEECH[2])  # no reply in between: one turn
    ctx.items.append(llm.FunctionCall(call_id="1", name="lookup", arguments="{}"))
    ctx.items.append(llm.FunctionCallOutput(call_id="1", name="lookup", output="40 spaces", is_error=False))
    ctx.add_message(role="assistant", content="Yes, parking is free.")
    ctx.add_message(role="assistant", content="There are 40 spaces.")
    user("Thanks, bye.", None)  # no timestamps: text only
    ctx.add_message(role="assistant", content="Goodbye!")
    loop = asyncio.new_event_loop()  # AgentSession() wants a loop; a sync test after async ones has none
    try:
        asyncio.set_event_loop(loop)
        options = AgentSession().options
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    report = SessionReport(
        job_id="AJ_test",
        room_id="RM_1",
        room="call 42/clinic",
        options=options,
        events=[],
        chat_history=ctx,
        audio_recording_started_at=T0,
    )
    path = tmp_path / "session_report.json"
    path.write_text(json.dumps(report.to_dict()))
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stereo like LiveKit's recorder (user left, agent right), OGG/Opus at 48 kHz (encoded once: ~1 s)."""
    tmp_path = tmp_path_factory.mktemp("rec")
    n = 14 * RATE
    stereo = np.zeros((n, 2), np.float32)
    t = np.arange(n) / RATE
    for ch, spans, hz in ((0, SPEECH, USER_HZ), (1, AGENT, AGENT_HZ)):
        for a, b in spans:
            sl = slice(round(a * RATE), round(b * RATE))
            stereo[sl, ch] = 0.5 * np.sin(2 * np.pi * hz * t[sl])
    path = tmp_path / "recording.ogg"
    sf.write(path, stereo, RATE, format="OGG", subtype="OPUS")
    return path


def _band_energy(x: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x))
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spec[(f > hz - 50) & (f < hz + 50)].sum())


def test_turns_follow_the_chat_history(tmp_path: Path) -> None:
    turns = session_turns(json.loads(_session_report(tmp_path).read_text()))
    assert [(t.user, t.reference) for t in turns] == [
        ("When do you open on Monday?", "We open at 8 am."),
        ("And parking, is it free?", "Yes, parking is free. There are 40 spaces."),
        ("Thanks, bye.", "Goodbye!"),
    ]
    assert turns[1].started_at == T0 + 6.0 and turns[1].stopped_at == T0 + 8.2  # merged span
    assert turns[2].started_at is None


def test_round_trip_with_recording(tmp_path: Path, recording: Path) -> None:
    out = tmp_path / "ds"
    result = import_session(_session_report(tmp_path), audio=recording, out=out)
    conv = result.conversation
    assert conv.id == "session-call-42-clinic" and conv.tags == ["imported"]
    assert result.audio_files == [f"audio/{conv.id}_0.wav", f"audio/{conv.id}_1.wav"]
    assert result.notes == ["turn 2: no started/stopped_speaking_at in the report: text only"]
    assert validate_dataset(out) == []

    ds = load_dataset(out, strict=True)
    loaded = ds.get(conv.id)
    assert loaded.model_dump() == conv.model_dump() and loaded.turns[2].audio is None
    for i, (a, b) in enumerate([SPEECH[0], (SPEECH[1][0], SPEECH[2][1])]):
        turn = loaded.turns[i]
        span = turn.speech_span("recording")
        assert span is not None
        assert (span.speech_start_s, span.speech_end_s) == pytest.approx((0.3, 0.3 + b - a))
        audio = load_audio(ds.audio_path(turn, "recording"))
        assert audio.duration_s == pytest.approx(b - a + 1.1, abs=1e-3)
        x = audio.samples
        s, e = round(span.speech_start_s * 16000), round(span.speech_end_s * 16000)
        inside, outside = np.abs(x[s + 400 : e - 400]), np.abs(np.r_[x[: s - 400], x[e + 400 :]])
        assert inside.mean() > 0.2 and outside.max() < 0.05  # the cut is aligned with the speech
        assert _band_energy(x, USER_HZ) > 50 * _band_energy(x, AGENT_HZ)  # only the user's channel


def test_second_import_appends_and_a_taken_id_changes_nothing(tmp_path: Path, recording: Path) -> None:
    report, rec, out = _session_report(tmp_path), recording, tmp_path / "ds"
    import_session(report, audio=rec, out=out, conversation_id="first")
    before = (out / "conversations.jsonl").read_bytes()
    files = sorted(p.name for p in (out / "audio").iterdir())
    with pytest.raises(SessionImportError, match="already exists"):
        import_session(report, audio=rec, out=out, conversation_id="first")
    assert (out / "conversations.jsonl").read_bytes() == before
    assert sorted(p.name for p in (out / "audio").iterdir()) == files
    import_session(report, out=out, conversation_id="second", tags=["text-only"])
    ds = load_dataset(out, strict=True)
    assert [c.id for c in ds.conversations] == ["first", "second"]
    assert ds.get("second").tags == ["text-only"] and all(t.audio is None for t in ds.get("second").turns)


def test_bad_reports_are_clear_errors_and_write_nothing(tmp_path: Path, recording: Path) -> None:
    out = tmp_path / "ds"
    for content, match in [
        ("{nope", "not a JSON session report"),
        ('{"events": []}', "no chat_history.items"),
        ('{"chat_history": {"items": [{"type": "message", "role": "user", "content": 5}]}}', "not a valid message"),
        ('{"chat_history": {"items": []}}', "no user messages"),
    ]:
        f = tmp_path / "r.json"
        f.write_text(content)
        with pytest.raises(SessionImportError, match=match):
            import_session(f, out=out)
    data = json.loads(_session_report(tmp_path).read_text())
    data.pop("audio_recording_started_at")
    f.write_text(json.dumps(data))
    with pytest.raises(SessionImportError, match="audio_recording_started_at"):
        import_session(f, audio=recording, out=out)
    assert not out.exists()


def test_timestamps_outside_the_recording_leave_the_turn_text_only(tmp_path: Path) -> None:
    report = _session_report(tmp_path)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(3 * 16000, np.float32), 16000)  # mono, 3 s: only the first turn fits
    result = import_session(report, audio=short, out=tmp_path / "ds")
    assert result.audio_files == [f"audio/{result.conversation.id}_0.wav"]
    assert "turn 1: speech 6.00-8.20 s is outside the 3.00 s recording" in result.notes[0]


def test_cli_import_session(tmp_path: Path, recording: Path) -> None:
    runner = CliRunner()
    report, rec, out = _session_report(tmp_path), recording, tmp_path / "ds"
    ok = runner.invoke(app, ["import-session", str(report), "--audio", str(rec), "--out", str(out), "--id", "s1"])
    assert ok.exit_code == 0, ok.stdout
    assert "appended s1 (3 turns, 2 audio files)" in ok.stdout and "text only" in ok.stdout
    again = runner.invoke(app, ["import-session", str(report), "--out", str(out), "--id", "s1"])
    assert again.exit_code == 2 and "import failed" in again.stdout
