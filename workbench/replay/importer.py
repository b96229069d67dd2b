"""Turn a recorded LiveKit session into a dataset conversation, so real calls can be replayed.

Input: the JSON of ``SessionReport.to_dict()`` (what ``JobContext.make_session_report()`` builds and
console mode saves as ``session_report.json``) and, optionally, the session recording (LiveKit's
recorder writes a stereo OGG/Opus file: channel 0 the user, channel 1 the agent).

What is used from the report:

- ``chat_history.items``: each user message opens a turn (its text is the turn's ``user``); the
  assistant messages up to the next user message, joined, are its ``reference``. User messages
  with no reply between them are merged into one turn. Other items (system, tools, handoffs) are
  skipped.
- for audio, ``audio_recording_started_at`` and each user message's ``metrics.started_speaking_at``
  / ``metrics.stopped_speaking_at`` (wall-clock seconds): the turn is cut from
  ``start - 0.3 s`` to ``end + 0.8 s`` (clamped to the recording) into ``audio/<id>_<turn>.wav``
  (16 kHz mono 16-bit), variant ``recording``, with the speech span in ``audio_meta``. A turn
  without both timestamps stays text-only, and the result says so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from workbench.core.io import atomic_file
from workbench.replay.audio import load_audio, probe_audio
from workbench.replay.dataset import (
    AUDIO_DIR,
    CONVERSATIONS_FILE,
    Conversation,
    DatasetError,
    DatasetTurn,
    SpeechSpan,
    load_dataset,
)

VARIANT = "recording"
RATE = 16000
LEAD_S, TAIL_S = 0.3, 0.8
MAX_REPORT_BYTES = 50 * 1024 * 1024


class SessionImportError(ValueError):
    """The report or recording cannot be imported; nothing was written."""


@dataclass
class ImportedTurn:
    user: str
    reference: str = ""
    started_at: float | None = None
    stopped_at: float | None = None


@dataclass
class ImportResult:
    conversation: Conversation
    dataset: Path
    audio_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise SessionImportError(f"{p}: over {MAX_REPORT_BYTES // 2**20} MB, not a session report")
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionImportError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        if isinstance(e, SessionImportError):
            raise
        raise SessionImportError(f"{p}: not a JSON session report: {e}") from e
    items = data.get("chat_history", {}).get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise SessionImportError(f"{p}: no chat_history.items: not a LiveKit session report")
    return data


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def session_turns(report: dict[str, Any]) -> list[ImportedTurn]:
    """User turns with the agent reply that followed each, in order (see the module docstring)."""
    from livekit.agents.llm import ChatMessage
    from pydantic import ValidationError

    turns: list[ImportedTurn] = []
    replied = True  # no open turn yet
    replies: list[str] = []

    def close() -> None:
        if turns:
            turns[-1].reference = " ".join(r for r in replies if r)

    for n, raw in enumerate(report["chat_history"]["items"]):
        if not isinstance(raw, dict) or raw.get("type", "message") != "message":
            continue
        try:
            msg = ChatMessage.model_validate(raw)
        except ValidationError as e:
            raise SessionImportError(f"chat_history.items[{n}]: not a valid message: {e}") from e
        text = " ".join((msg.text_content or "").split())
        if msg.role == "user":
            metrics = msg.metrics or {}
            start, stop = _time(metrics.get("started_speaking_at")), _time(metrics.get("stopped_speaking_at"))
            if not replied and turns:  # the caller spoke again before any reply: one turn
                t = turns[-1]
                t.user = f"{t.user} {text}".strip()
                t.stopped_at = stop if stop is not None else t.stopped_at
                if t.started_at is None:
                    t.started_at = start
                continue
            close()
            replies = []
            turns.append(ImportedTurn(text, started_at=start, stopped_at=stop))
            replied = False
        elif msg.role == "assistant" and turns:
            replies.append(text)
            replied = True
    close()
    return [t for t in turns if t.user]


def _safe_id(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")[:90]
    return cleaned or "session"


def import_session(
    report_path: str | Path,
    *,
    audio: str | Path | None = None,
    out: str | Path = Path("datasets/imported"),
    conversation_id: str | None = None,
    tags: list[str] | None = None,
    channel: int | None = None,
) -> ImportResult:
    """Append the session as one conversation to ``out``/conversations.jsonl (created if needed).

    ``channel`` picks the user's channel of the recording (default: 0 when it has two or more,
    as LiveKit's recorder puts the user on the left). Audio files are written before the line is
    appended and removed again if anything fails, so a failed import leaves the dataset as it was.
    """
    report = read_report(report_path)
    turns = session_turns(report)
    if not turns:
        raise SessionImportError(f"{report_path}: the session has no user messages")
    root = Path(out)
    cid = conversation_id or _safe_id(f"session-{report.get('room') or report.get('job_id') or 'import'}")
    existing: set[str] = set()
    if (root / CONVERSATIONS_FILE).exists():
        try:
            existing = {c.id for c in load_dataset(root).conversations}
        except DatasetError as e:
            raise SessionImportError(str(e)) from e
    if cid in existing:
        raise SessionImportError(f"conversation id {cid!r} already exists in {root}: pass another --id")

    notes: list[str] = []
    spans: list[tuple[float, float] | None] = [None] * len(turns)
    samples: np.ndarray | None = None
    if audio is not None:
        started = _time(report.get("audio_recording_started_at"))
        if started is None:
            raise SessionImportError(
                "the report has no audio_recording_started_at: cannot place turns in the recording"
            )
        info = probe_audio(audio)
        pick = channel if channel is not None else (0 if info.channels >= 2 else None)
        samples = load_audio(audio, RATE, channel=pick).samples
        total = len(samples) / RATE
        for i, t in enumerate(turns):
            if t.started_at is None or t.stopped_at is None:
                notes.append(f"turn {i}: no started/stopped_speaking_at in the report: text only")
                continue
            a, b = t.started_at - started, t.stopped_at - started
            if not (0 <= a < b <= total + 0.05):
                notes.append(f"turn {i}: speech {a:.2f}-{b:.2f} s is outside the {total:.2f} s recording: text only")
                continue
            spans[i] = (a, min(b, total))
    elif any(t.started_at is not None for t in turns):
        notes.append("no recording given: text-only turns")

    written: list[Path] = []
    try:
        dataset_turns = []
        for i, t in enumerate(turns):
            fields: dict[str, Any] = {"user": t.user, "reference": t.reference}
            if spans[i] is not None and samples is not None:
                a, b = spans[i]  # type: ignore[misc]
                lo, hi = max(0, round((a - LEAD_S) * RATE)), min(len(samples), round((b + TAIL_S) * RATE))
                rel = f"{AUDIO_DIR}/{cid}_{i}.wav"
                dest = root / rel
                if dest.exists():
                    raise SessionImportError(f"{dest} already exists: pass another --id")
                dest.parent.mkdir(parents=True, exist_ok=True)
                clip = np.clip(samples[lo:hi], -1.0, 32767 / 32768)
                with atomic_file(dest) as f:  # a crash leaves no half-written recording behind
                    sf.write(f, np.round(clip * 32768).astype(np.int16), RATE, subtype="PCM_16", format="WAV")
                written.append(dest)
                fields["audio"] = {VARIANT: rel}
                fields["audio_meta"] = {
                    VARIANT: SpeechSpan(
                        speech_start_s=round(a - lo / RATE, 4),
                        speech_end_s=round(b - lo / RATE, 4),
                        duration_s=round((hi - lo) / RATE, 4),
                    )
                }
            dataset_turns.append(DatasetTurn(**fields))
        conv = Conversation(id=cid, tags=tags if tags is not None else ["imported"], turns=dataset_turns)
        root.mkdir(parents=True, exist_ok=True)
        target = root / CONVERSATIONS_FILE
        prefix = ""
        if target.exists() and target.stat().st_size:
            with target.open("rb") as f:
                f.seek(-1, 2)
                prefix = "" if f.read(1) == b"\n" else "\n"
        with target.open("a", encoding="utf-8") as f:
            f.write(prefix + conv.to_json_line() + "\n")
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return ImportResult(conv, root, [p.relative_to(root).as_posix() for p in written], notes)
