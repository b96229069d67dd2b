"""Voice mode: recorded user audio played in real time through VAD, STT, the strategy and TTS.

The session gets a microphone that plays each turn's recording (and silence in between) paced by the
wall clock, and a speaker that captures the agent's frames and emulates playback (so the agent
leaves "speaking" only after its audio would have finished). Because the end of user speech is
known from the recording, every stage can be timed against it as the caller would hear it. In real time
both sides are also recorded into one stereo call (:mod:`workbench.replay.call`), and a turn with
``barge_in_s`` starts over the agent's previous reply, to measure whether and how fast the agent yields.
Faster-than-real-time playback works for functional checks, but its rows carry no latency figures:
the framework mixes audio time and wall time (VAD, endpointing timers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import llm
from livekit.agents.voice import io

from workbench.core.schema import critical_path
from workbench.core.types import TurnTrace
from workbench.core.wer import wer
from workbench.models import ModelStack
from workbench.pipeline import build_agent, build_session
from workbench.pipeline.agents import AgentFactory, build_user_agent
from workbench.replay.audio import load_audio
from workbench.replay.call import AgentReply, heard_columns, render, wav_bytes
from workbench.replay.text import dataset_row, trace_columns
from workbench.replay.tools import ToolRecorder
from workbench.strategies.base import Strategy

RATE = 16000
FRAME_MS = 20
FRAME = RATE * FRAME_MS // 1000
CALL_WAV_KEY = "_call_wav"
"""Key of the stereo WAV bytes of the call so far, on each row; the runner stores them and drops the key."""
NOISE_SETTLE_S = 2.0
"""After a turn that expects no yield (noise, a backchannel): how long a reply to it may take to start."""
CUT_SETTLE_S = 10.0
"""After a cut-off: how long past the caller's end of speech the rest of their words may take to be ended as a
turn of their own (its reply may then take up to the turn timeout)."""


@dataclass
class Utterance:
    """One user turn's audio, 16 kHz mono float32, and where the speech ends in it."""

    samples: np.ndarray
    speech_end_s: float
    audio_path: str
    speech_start_s: float = 0.0
    started_at: float | None = None  # wall clock of its first frame, set by the microphone


class RealtimeMicrophone(io.AudioInput):
    """A microphone that plays queued utterances, and silence between them, paced by the wall clock.

    ``speed`` > 1 plays faster than real time (functional checks only). ``record`` keeps every frame played
    (``frames``), the caller's side of the call recording.
    """

    def __init__(self, speed: float = 1.0, record: bool = False) -> None:
        super().__init__(label="workbench-replay-mic")
        self.speed = speed
        self._pending: asyncio.Queue[tuple[Utterance, asyncio.Future[float]]] = asyncio.Queue()
        self._current: np.ndarray | None = None
        self._pos = 0
        self._t0: float | None = None
        self._n = 0
        self._closed = False
        self._cut = False
        self._silence = rtc.AudioFrame(bytes(FRAME * 2), RATE, 1, FRAME)
        self._wall0 = 0.0
        self.record = record
        self.frames: list[np.ndarray] = []  # every frame played (int16), when recording

    @property
    def wall0(self) -> float | None:
        """Wall clock of the first frame: 0 s in the call recording (None before the session reads)."""
        return self._wall0 if self._t0 is not None else None

    def play(self, utt: Utterance, now: bool = False) -> asyncio.Future[float]:
        """Queue an utterance; the future resolves to the wall time (time.time) its speech ends.

        ``now`` (a barge-in) starts it at the next frame, dropping what is left of the recording playing: only
        its silent tail, as a barge-in is queued after the previous turn's speech ended.
        """
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((utt, fut))
        self._cut = self._cut or now
        return fut

    def close(self) -> None:
        self._closed = True

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        if self._t0 is None:
            self._t0 = time.perf_counter()
            self._wall0 = time.time()
        due = self._t0 + self._n * FRAME_MS / 1000 / self.speed
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        frame_start_wall = self._wall0 + (due - self._t0)  # when this frame "leaves the caller's mouth"
        self._n += 1
        if self._cut and not self._pending.empty():
            self._current, self._cut = None, False
        if self._current is None and not self._pending.empty():
            utt, fut = self._pending.get_nowait()
            self._current, self._pos = utt.samples, 0
            utt.started_at = frame_start_wall
            fut.set_result(frame_start_wall + utt.speech_end_s / self.speed)
        if self._current is None:
            if self.record:
                self.frames.append(np.zeros(FRAME, np.int16))
            return self._silence
        chunk = self._current[self._pos : self._pos + FRAME]
        self._pos += FRAME
        if self._pos >= len(self._current):
            self._current = None
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=np.float32)])
        ints = (np.clip(chunk, -1.0, 1.0) * 32767.0).astype(np.int16)
        if self.record:
            self.frames.append(ints)
        return rtc.AudioFrame(ints.tobytes(), RATE, 1, FRAME)


class PlaybackSpeaker(io.AudioOutput):
    """Captures the agent's audio and emulates a speaker playing it in real time; ``record`` keeps the samples
    of each reply (``replies``), the agent's side of the call recording."""

    def __init__(self, speed: float = 1.0, record: bool = False) -> None:
        # at the microphone's rate (LiveKit resamples), so the call recording needs no resampler
        super().__init__(
            label="workbench-replay-speaker", capabilities=io.AudioOutputCapabilities(pause=False), sample_rate=RATE
        )
        self.speed = speed
        self.first_frame_at: list[float] = []  # wall time of each reply's first frame
        self.record = record
        self.replies: list[AgentReply] = []  # each reply's start, end and (when recording) samples
        self.started = asyncio.Event()  # set at each reply's first frame
        self.durations: list[float] = []
        self.interruptions = 0
        self._pushed = 0.0
        self._start = 0.0
        self._flush_task: asyncio.Task[None] | None = None
        self._interrupted = asyncio.Event()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._flush_task is not None and not self._flush_task.done():
            await self._flush_task
        if not self._pushed:
            now = time.time()
            self._start = time.perf_counter()
            self.first_frame_at.append(now)
            self.replies.append(AgentReply(now))
            self.started.set()
            self.on_playback_started(created_at=now)
        self._pushed += frame.duration
        if self.record:
            self.replies[-1].chunks.append(np.frombuffer(frame.data, dtype=np.int16)[:: frame.num_channels].copy())

    def flush(self) -> None:
        super().flush()
        if self._pushed:
            self._interrupted.clear()
            self._flush_task = asyncio.create_task(self._play_out())

    def clear_buffer(self) -> None:
        if self._pushed:
            self._interrupted.set()

    async def _play_out(self) -> None:
        remaining = self._start + self._pushed / self.speed - time.perf_counter()
        interrupted = False
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interrupted.wait(), remaining)
                interrupted = True
        played = min(self._pushed, (time.perf_counter() - self._start) * self.speed) if interrupted else self._pushed
        self.interruptions += int(interrupted)
        self.durations.append(played)
        reply = self.replies[-1]
        reply.played_s, reply.interrupted = played, interrupted
        reply.end = reply.start + played / self.speed
        self._pushed = 0.0
        self.on_playback_finished(playback_position=played, interrupted=interrupted)


@dataclass
class _TurnEvents:
    """What the session reported during one turn, with wall-clock times."""

    finals: list[tuple[float, str]] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)  # end-of-turn decision of every user message committed
    commits: list[tuple[float, llm.ChatMessage]] = field(default_factory=list)  # every user message, when committed
    done_at: float | None = None  # when a reply last finished (speaking to listening)
    assistant: list[llm.ChatMessage] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    lk: dict[str, Any] = field(default_factory=dict)
    # an unrecoverable STT/TTS/LLM error ends the wait at once (no reply is coming), not after turn_timeout_s
    failure: tuple[str, str] | None = None
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def user_msg(self) -> llm.ChatMessage | None:
        """The turn's last committed user message."""
        return self.commits[-1][1] if self.commits else None

    @property
    def user_committed_at(self) -> float | None:
        return self.commits[-1][0] if self.commits else None


async def _any(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until one of ``events`` is set (True) or ``timeout`` passes (False)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def _future_event(fut: asyncio.Future[Any]) -> asyncio.Event:
    """An event set when ``fut`` is done (so it can be awaited alongside other events)."""
    e = asyncio.Event()
    fut.add_done_callback(lambda _: e.set())
    return e


def has_audio(conv: Any, variant: str) -> bool:
    return all(variant in t.audio_variants() for t in conv.turns)


def load_utterance(dataset: Any, turn: Any, variant: str) -> Utterance:
    """The turn's recording at 16 kHz mono and its known end of speech (estimated only when not recorded)."""

    path = dataset.audio_path(turn, variant)
    samples = load_audio(path, target_rate=RATE).samples
    span = turn.speech_span(variant)
    end = span.speech_end_s if span is not None else _estimate_speech_end(samples)
    start = span.speech_start_s if span is not None else _estimate_speech_start(samples)
    return Utterance(np.asarray(samples, dtype=np.float32), float(end), turn.audio_variants()[variant], float(start))


def _loud_windows(samples: np.ndarray) -> np.ndarray:
    """Indices of the 10 ms windows above -40 dBFS."""
    win = RATE // 100
    n = len(samples) // win
    if n == 0:
        return np.zeros(0, np.int64)
    rms = np.sqrt(np.mean(samples[: n * win].reshape(n, win) ** 2, axis=1))
    return np.nonzero(rms > 0.01)[0]


def _estimate_speech_end(samples: np.ndarray) -> float:
    """Last 10 ms window above -40 dBFS: used only when the dataset does not record the end of speech."""
    loud = _loud_windows(samples)
    return float((loud[-1] + 1) / 100) if len(loud) else 0.0


def _estimate_speech_start(samples: np.ndarray) -> float:
    """First 10 ms window above -40 dBFS: used only when the dataset does not record the start of speech."""
    loud = _loud_windows(samples)
    return float(loud[0] / 100) if len(loud) else 0.0


async def replay_voice(
    stack: ModelStack,
    strategy: Strategy,
    conv: Any,
    *,
    dataset: Any,
    variant: str,
    emit: Callable[[dict[str, Any]], None],
    start_turn: int = 0,
    history: llm.ChatContext | None = None,
    instructions: str | None = None,
    speech_text: dict[str, Any] | None = None,
    agent_factory: AgentFactory | None = None,
    options: Any = None,
    record_call: bool = False,
) -> None:
    """Play ``conv``'s recordings into a full voice session; ``emit`` receives one row per turn.

    ``record_call`` (real time only): every row gets its span in the call recording and what the signal says
    (:mod:`workbench.replay.call`), and the stereo WAV of the call so far under ``CALL_WAV_KEY`` for the runner to
    store in the run folder (rows travel from a Ray slot the same way, so the file needs no shared disk).
    """
    realtime = getattr(options, "realtime", True)
    speed = 1.0 if realtime else 4.0
    turn_timeout = getattr(options, "turn_timeout_s", 60.0)
    tts_kind = getattr(options, "tts", None)
    agent = (
        await build_user_agent(agent_factory, chat_ctx=history)
        if agent_factory is not None
        else build_agent(**({"instructions": instructions} if instructions else {}), chat_ctx=history)
    )
    record = record_call and realtime
    mic, speaker = RealtimeMicrophone(speed, record=record), PlaybackSpeaker(speed, record=record)
    session = build_session(stack, strategy, mode="voice", tts_kind=tts_kind, speech_text=speech_text)
    session.input.audio = mic
    session.output.audio = speaker
    ev = _TurnEvents()

    def on_transcribed(e: Any) -> None:
        if e.is_final and e.transcript.strip():
            ev.finals.append((e.created_at, e.transcript.strip()))

    def on_item(e: Any) -> None:
        item = e.item
        if isinstance(item, llm.ChatMessage) and item.role == "user":
            ev.commits.append((e.created_at, item))
            ev.ends.append(_end_of_turn_at(dict(item.metrics or {})) or e.created_at)
        elif isinstance(item, llm.ChatMessage) and item.role == "assistant":
            ev.assistant.append(item)

    def on_state(e: Any) -> None:
        if e.old_state == "speaking" and e.new_state == "listening" and ev.assistant:
            ev.done_at = time.time()
            ev.done.set()
        if e.new_state == "listening":
            ev.listening.set()
        else:
            ev.listening.clear()

    def on_error(e: Any) -> None:
        err = e.error
        if getattr(err, "recoverable", False) or ev.failure is not None:
            return  # a retry is still coming; keep the turn's first real failure
        kind = getattr(err, "type", None) or "error"  # stt_error, tts_error, llm_error
        ev.failure = (kind, str(getattr(err, "error", err))[:500])
        ev.failed.set()

    def on_close(e: Any) -> None:
        ev.closed.set()

    def on_metrics(e: Any) -> None:
        m = e.metrics
        ev.lk.setdefault(m.type, []).append(m.model_dump(mode="json", exclude={"metadata"}))

    session.on("user_input_transcribed", on_transcribed)
    session.on("conversation_item_added", on_item)
    session.on("agent_state_changed", on_state)
    session.on("metrics_collected", on_metrics)
    session.on("error", on_error)
    session.on("close", on_close)
    await session.start(agent)
    tool_timeout = getattr(options, "tool_timeout_s", None)
    tools = ToolRecorder(session, agent, timeout_s=turn_timeout / 2 if tool_timeout is None else tool_timeout)
    last = len(conv.turns) - 1
    pending: tuple[int, Utterance, asyncio.Future[float]] | None = None  # a barge-in turn already playing
    # what the session reported for a barge-in turn while the turn it talks over was still open
    carried: tuple[list[tuple[float, str]], list[float], list[tuple[float, llm.ChatMessage]]] = ([], [], [])

    def out(row: dict[str, Any], call: np.ndarray | None = None) -> None:
        """Emit a row with the call so far (``call``: already rendered for this row; the runner rewrites the call
        file): an interrupted call keeps what it recorded up to its last stored turn, and a resumed one continues
        that file."""
        if record and mic.wall0 is not None:
            if call is None:
                call = render(mic.frames, mic.wall0, speaker.replies, RATE)
            row[CALL_WAV_KEY] = wav_bytes(call, RATE)
        emit(row)

    try:
        for i in range(start_turn, len(conv.turns)):
            turn = conv.turns[i]
            row = dataset_row(conv, i)
            row["started_at"] = datetime.now(UTC).isoformat()
            row["realtime"] = realtime
            row["barge_in_s"] = getattr(turn, "barge_in_s", None)
            played: asyncio.Future[float] | None = None
            if pending is not None and pending[0] == i:
                _, utt, played = pending
            else:
                try:
                    utt = load_utterance(dataset, turn, variant)
                except Exception as e:  # a bad recording is this turn's error, not the run's
                    row.update(error_kind="bad_audio", error=str(e)[:500], answer="")
                    out(row)
                    continue
            pending = None
            row["audio_path"], row["speech_end_s"] = utt.audio_path, utt.speech_end_s
            ev.finals[:], ev.ends[:], ev.commits[:] = carried
            carried = ([], [], [])
            ev.assistant.clear()
            ev.lk = {}
            ev.done_at = None
            ev.done.clear()
            ev.failure = None
            ev.failed.clear()
            # a barge-in turn committed while the turn it talked over was open may have its reply playing already
            since = ev.commits[0][0] if ev.commits else None
            replies_before = sum(1 for t in speaker.first_frame_at if since is None or t < since)
            if replies_before == len(speaker.first_frame_at):
                speaker.started.clear()
            tools.start_turn(getattr(turn, "tool_results", None))
            interruptions_before = speaker.interruptions
            if played is None:
                played = mic.play(utt)
            if ev.closed.is_set() or not await _any(_future_event(played), ev.closed, timeout=turn_timeout):
                # the session closed itself (too many unrecoverable errors): nobody reads the microphone
                played.cancel()
                row.update(error_kind="session_closed", error="the agent session closed (unrecoverable errors)")
                row["answer"] = ""
                out(row)
                continue
            speech_end_at = played.result()
            if i < last and (barge := getattr(conv.turns[i + 1], "barge_in_s", None)) is not None:
                pending = await _barge_in(
                    conv.turns[i + 1], i + 1, barge, dataset, variant, mic, speaker, ev, speed, turn_timeout
                )
            if getattr(turn, "expect_yield", None) is False:
                # noise or a backchannel: no reply of its own is due, but one may come; wait only while it does
                replied = await _any(ev.done, ev.failed, ev.closed, timeout=NOISE_SETTLE_S / speed)
                if not replied and not ev.listening.is_set():
                    replied = await _any(ev.done, ev.failed, ev.closed, timeout=turn_timeout)
                no_reply_ok = True
            else:
                replied = await _any(ev.done, ev.failed, ev.closed, timeout=turn_timeout)
                no_reply_ok = False
                if replied and ev.done.is_set() and _cut_off(ev, speaker, replies_before, speech_end_at):
                    await _rest_of_cut_turn(ev, speech_end_at, CUT_SETTLE_S / speed, turn_timeout)
            if replied and not ev.done.is_set():
                # let a reply cut short by the failure finish (bounded), so the next turn starts from listening
                await _any(ev.done, ev.closed, ev.listening, timeout=min(turn_timeout, 5.0))
            await asyncio.sleep(0.3 / speed)  # a caller's pause before the next turn
            harness_error: tuple[str, str] | None = ev.failure  # also a TTS failure late in a reply that ended
            if not replied and not no_reply_ok:
                harness_error = ("no_reply", f"no agent reply within {turn_timeout:.0f} s")
            elif replied and harness_error is None and not ev.done.is_set():
                harness_error = ("session_closed", "the agent session closed")
            if pending is not None and pending[1].started_at is not None:
                carried = _split_at(ev, pending[1].started_at + pending[1].speech_start_s / speed)
            row.update(_voice_columns(ev, speaker, replies_before, speech_end_at, strategy, realtime))
            if harness_error is not None:  # the strategy's own fault record, when it has one, comes first
                if row.get("error_kind"):
                    row["error"] = f"{row.get('error') or ''}; then {harness_error[0]}: {harness_error[1]}"[:500]
                else:
                    row["error_kind"], row["error"] = harness_error
            row["interruptions"] = speaker.interruptions - interruptions_before
            row["user_turns"] = len(ev.ends)
            row["cut_off"] = _cut_off(ev, speaker, replies_before, speech_end_at) if realtime else None
            row.update(_barge_in_columns(turn, utt, speaker, speed, realtime))
            call = None
            if record and mic.wall0 is not None and utt.started_at is not None:
                nxt = pending[1].started_at if pending is not None else None
                start, end = utt.started_at - mic.wall0, (nxt or time.time()) - mic.wall0
                call = render(mic.frames, mic.wall0, speaker.replies, RATE)
                row["call_offset_s"] = start
                row.update(heard_columns(call, RATE, start, end))
            row.update(tools.columns())
            row["wer"] = wer(row["user_text"], row["transcript"]) if row.get("transcript") else None
            out(row, call)
    finally:
        mic.close()
        tools.close()
        await session.aclose()


def _cut_off(ev: _TurnEvents, speaker: PlaybackSpeaker, replies_before: int, speech_end_at: float) -> bool:
    """The caller was cut off: an end of turn was decided, or the agent's audio started, before their recording's
    speech had ended (a pause mid-utterance taken for the end of the turn), or their turn was committed as more
    than one user message (the agent answered part of it)."""
    first = speaker.first_frame_at[replies_before] if len(speaker.first_frame_at) > replies_before else None
    early = any(t < speech_end_at for t in ev.ends) or (first is not None and first < speech_end_at)
    return early or len(ev.ends) > 1


def _split_at(
    ev: _TurnEvents, since: float
) -> tuple[list[tuple[float, str]], list[float], list[tuple[float, llm.ChatMessage]]]:
    """Take out of ``ev`` the transcripts, ends of turn and user messages from ``since`` on (the barge-in turn's
    first words): they are the next turn's. The agent may yield only once the caller's words are transcribed
    (``min_interruption_words``), so they can arrive while the reply being talked over is still this turn's."""
    finals = [f for f in ev.finals if f[0] >= since]
    ends = [t for t in ev.ends if t >= since]
    commits = [c for c in ev.commits if c[0] >= since]
    ev.finals[:] = [f for f in ev.finals if f[0] < since]
    ev.ends[:] = [t for t in ev.ends if t < since]
    ev.commits[:] = [c for c in ev.commits if c[0] < since]
    return finals, ends, commits


async def _rest_of_cut_turn(ev: _TurnEvents, speech_end_at: float, settle_s: float, timeout: float) -> None:
    """After a cut-off, the rest of the caller's words get an end of turn and a reply of their own: wait for both
    (bounded), so the next turn, or the end of the conversation, does not start over them.

    Done when the caller has finished, an end of turn came after their speech ended, and a reply finished after
    that; gives up ``settle_s`` after the end of speech when no such end of turn came (the rest was not heard).
    """
    while not (ev.failed.is_set() or ev.closed.is_set()):
        now = time.time()
        last = ev.ends[-1] if ev.ends else None
        if now >= speech_end_at and last is not None and last >= speech_end_at:
            if ev.done_at is not None and ev.done_at >= last and ev.listening.is_set():
                return
            if now >= last + timeout:
                return
        elif now >= speech_end_at + settle_s:
            return
        await asyncio.sleep(0.05)


async def _barge_in(
    turn: Any,
    index: int,
    barge_in_s: float,
    dataset: Any,
    variant: str,
    mic: RealtimeMicrophone,
    speaker: PlaybackSpeaker,
    ev: _TurnEvents,
    speed: float,
    timeout: float,
) -> tuple[int, Utterance, asyncio.Future[float]] | None:
    """Start the next turn's audio ``barge_in_s`` into the reply that is starting, over the agent.

    None when there is no reply to talk over or the recording cannot be read (the turn then plays, or reports
    its bad audio, in its own iteration).
    """
    try:
        utt = load_utterance(dataset, turn, variant)
    except Exception:
        return None
    if not await _any(speaker.started, ev.failed, ev.closed, timeout=timeout) or not speaker.started.is_set():
        return None
    delay = speaker.first_frame_at[-1] + barge_in_s / speed - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return index, utt, mic.play(utt, now=True)  # starts at the microphone's next frame (within 20 ms)


def _barge_in_columns(
    turn: Any, utt: Utterance, speaker: PlaybackSpeaker, speed: float, realtime: bool
) -> dict[str, Any]:
    """Did the agent stop for the caller, and how fast: from the caller's first words (the recording's speech
    start) to the end of the agent audio that was playing then."""
    if getattr(turn, "barge_in_s", None) is None or utt.started_at is None:
        return {}
    caller_start = utt.started_at + utt.speech_start_s / speed
    reply = next((r for r in reversed(speaker.replies) if r.start <= caller_start), None)
    if reply is None or (reply.end is not None and reply.end < caller_start):
        return {"yielded": None}  # the agent had already finished: nothing to yield
    yielded = bool(reply.interrupted)
    return {
        "yielded": yielded,
        "yield_s": (reply.end - caller_start) if yielded and realtime and reply.end is not None else None,
        "false_interruption": yielded and getattr(turn, "expect_yield", None) is False,
    }


def _voice_columns(
    ev: _TurnEvents,
    speaker: PlaybackSpeaker,
    replies_before: int,
    speech_end_at: float,
    strategy: Strategy,
    realtime: bool,
) -> dict[str, Any]:
    transcript = " ".join(t for _, t in ev.finals)
    answer = " ".join(m.text_content or "" for m in ev.assistant).strip()
    trace = strategy.trace_for(ev.user_msg.id) if ev.user_msg is not None else None
    out = trace_columns(trace, lambda: transcript, answer) if trace is not None else {}
    user_metrics = dict(ev.user_msg.metrics or {}) if ev.user_msg is not None else {}
    assistant_metrics = dict(ev.assistant[0].metrics or {}) if ev.assistant else {}
    # LiveKit's per-turn report beside its metric events: the stages below are read from it
    lk = {**ev.lk, "turn": {"user": user_metrics, "assistant": assistant_metrics}}
    out.update(answer=answer, transcript=transcript, lk_metrics=json.dumps(lk, default=str))
    first = speaker.first_frame_at[replies_before] if len(speaker.first_frame_at) > replies_before else None
    out["agent_audio_s"] = sum(speaker.durations[replies_before:]) if first is not None else None
    if not realtime:  # functional check only: no latency figures
        for k in ("llm_ttfc_s", "llm_total_s", "recovery_s"):
            out[k] = None
        return out
    out.update(_stages(ev, user_metrics, assistant_metrics, trace, speech_end_at, first, out.get("llm_ttfc_s")))
    return out


def _stages(
    ev: _TurnEvents,
    user_metrics: dict[str, Any],
    assistant_metrics: dict[str, Any],
    trace: TurnTrace | None,
    speech_end_at: float,
    first_frame_at: float | None,
    llm_ttfc_s: float | None,
) -> dict[str, Any]:
    """The critical path's stages (schema.CRITICAL_PATH), each from the instrument that sees it best.

    Wall-clock instants (time.time) are ours or LiveKit's events; the LLM's request is the strategy's trace
    (perf_counter, moved onto the wall clock here); LiveKit's node metrics give the intervals in between.
    """
    decided_at = _end_of_turn_at(user_metrics) or ev.user_committed_at
    # the transcript the turn was ended on: a final arriving after the decision belongs to what follows
    finals = [t for t, _ in ev.finals if decided_at is None or t <= decided_at + 0.001] or [t for t, _ in ev.finals]
    ttft, ttfs = assistant_metrics.get("llm_node_ttft"), assistant_metrics.get("llm_node_ttfs")
    tts_ttfb = assistant_metrics.get("tts_node_ttfb")
    # both of LiveKit's figures count from its llm_node start: their difference moves onto the request
    anchored = ttfs is not None and ttft is not None and llm_ttfc_s is not None
    llm_ttfs = llm_ttfc_s + (ttfs - ttft) if anchored else ttfs
    requested_at = trace.started + (time.time() - time.perf_counter()) if trace is not None else None
    out: dict[str, Any] = {
        "eou_delay_s": decided_at - speech_end_at if decided_at is not None else None,
        "stt_s": finals[-1] - speech_end_at if finals else None,
        "llm_start_s": requested_at - decided_at if requested_at is not None and decided_at is not None else None,
        "llm_ttfs_s": llm_ttfs,
        "tts_ttfb_s": tts_ttfb,
        "v2v_s": first_frame_at - speech_end_at if first_frame_at is not None else None,
        "playout_s": None,
    }
    if None not in (requested_at, llm_ttfs, tts_ttfb, first_frame_at):
        out["playout_s"] = first_frame_at - (requested_at + llm_ttfs + tts_ttfb)  # type: ignore[operator]
    path = critical_path(out | {"llm_ttfc_s": llm_ttfc_s})
    out["unattributed_s"] = path["unattributed_s"] if path is not None else None
    return out


def _end_of_turn_at(user_metrics: dict[str, Any]) -> float | None:
    """When LiveKit decided the user's turn was over (wall clock), from the user message's metrics.

    Earlier than the user message reaching the history: that waits for on_user_turn_completed and scheduling,
    while the reply's LLM request may already be on its way.
    """
    stopped, delay = user_metrics.get("stopped_speaking_at"), user_metrics.get("end_of_turn_delay")
    return float(stopped) + float(delay) if stopped and delay is not None else None
