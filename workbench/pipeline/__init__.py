"""Factories for the voice agent, shared by the replay harness and the production worker.

Both build their ``Agent`` and ``AgentSession`` here, so what was measured is what ships,
including the text clean-up the caller hears (markdown off, words made speakable), which the session
applies to whatever agent it runs: the default :class:`DianaAgent` or your own
(:mod:`workbench.pipeline.agents`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, Literal

from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.transcription.filters import filter_emoji, filter_markdown
from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.models import ModelStack
from workbench.models.session import for_session
from workbench.models.speech import EarlyTranscripts, PendingSTT, TranscriptGate

DEFAULT_INSTRUCTIONS = (
    "You are Diana, the friendly front-desk voice assistant of a medical clinic. "
    "Answer in one or two short spoken sentences, without lists or markdown."
)

DEFAULT_REPLACEMENTS: dict[str, str] = {
    "Dr.": "Doctor",
    "St.": "Street",
    "Ave.": "Avenue",
    "DianaChat": "Diana Chat",
}
"""What the clinic demo needs spoken differently; a suite or promoted file can replace the whole map."""

TextTransform = Callable[[AsyncIterable[str]], AsyncIterable[str]]


class SpeechTextConfig(BaseModel):
    """Text clean-up between the LLM and TTS (0.x ``before_tts_cb``); never changes the transcript."""

    model_config = ConfigDict(extra="forbid")

    replacements: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_REPLACEMENTS))
    strip_markdown: bool = True  # livekit's own streaming filter_markdown
    strip_emoji: bool = True  # livekit's own filter_emoji

    @field_validator("replacements")
    @classmethod
    def _no_blank_keys(cls, v: dict[str, str]) -> dict[str, str]:
        blank = [k for k in v if not k.strip()]
        if blank:
            raise ValueError("replacement keys must be non-blank words (got an empty or whitespace key)")
        lowered: dict[str, str] = {}
        for k in v:
            if k.lower() in lowered:
                raise ValueError(f"replacement keys {lowered[k.lower()]!r} and {k!r} differ only in case")
            lowered[k.lower()] = k
        return v


class WordReplacer:
    """Case-insensitive whole-word replacement over a text stream, holding back only what could still match.

    A key split across chunks ("D" + "r. Smith") is still replaced, and a key that is a prefix of a
    longer word ("Dr" in "Dry") is not, so at most a key's length of text waits for the next chunk.
    Keys may contain punctuation or spaces ("Dr.", "St. Mary's"); overlapping keys prefer the longest.
    """

    _WORD = re.compile(r"\w")

    def __init__(self, replacements: Mapping[str, str]) -> None:
        keys = sorted(replacements, key=len, reverse=True)
        self._lookup = {k.lower(): v for k, v in replacements.items()}
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(k) for k in keys) + r")(?!\w)", re.IGNORECASE)
            if keys
            else None
        )
        self._prefixes = {k.lower()[:n] for k in keys for n in range(1, len(k) + 1)}
        self._max_len = max((len(k) for k in keys), default=0)
        self._raw = ""  # held-back input, not yet substituted
        self._prev = ""  # last character already emitted (the lookbehind of the held text)

    def _sub(self, text: str, start: int, end: int) -> tuple[str, int]:
        """Substitute matches of ``text[start:]`` that end by ``end``; return the output and the real cut."""
        assert self._pattern is not None
        out: list[str] = []
        pos = start
        for m in self._pattern.finditer(text, start):
            if m.start() >= end:
                break
            end = max(end, m.end())  # a confirmed match straddling the cut is emitted whole
            out.append(text[pos : m.start()])
            out.append(self._lookup.get(m.group(0).lower(), m.group(0)))
            pos = m.end()
        out.append(text[pos:end])
        return "".join(out), end

    def _hold_from(self, text: str, start: int) -> int:
        """Earliest index from which ``text`` could still grow into a key (or end on one awaiting its boundary)."""
        for i in range(max(start, len(text) - self._max_len), len(text)):
            before = text[i - 1] if i > 0 else ""
            if before and self._WORD.match(before):
                continue  # a key cannot start inside a word
            if text[i:].lower() in self._prefixes:
                return i
        return len(text)

    def feed(self, chunk: str) -> str:
        """Take the next chunk; return the text that is now final (possibly empty)."""
        if self._pattern is None:
            return chunk
        text = self._prev + self._raw + chunk
        start = len(self._prev)
        out, cut = self._sub(text, start, self._hold_from(text, start))
        if cut > start:
            self._prev = text[cut - 1]
        self._raw = text[cut:]
        return out

    def flush(self) -> str:
        """End of the stream: whatever is held back is now final."""
        if self._pattern is None or not self._raw:
            return ""
        text = self._prev + self._raw
        out, _ = self._sub(text, len(self._prev), len(text))
        self._raw, self._prev = "", text[-1]
        return out


def replace_words(replacements: Mapping[str, str]) -> TextTransform:
    """A streaming text transform (livekit ``TextTransforms`` shape) for whole-word replacements.

    livekit's own ``transcription.text_transforms.replace`` matches substrings ("St." inside
    "first."), so it cannot be used for abbreviations; this one matches whole words only.
    """

    async def transform(text: AsyncIterable[str]) -> AsyncIterator[str]:
        replacer = WordReplacer(replacements)
        async for chunk in text:
            if out := replacer.feed(chunk):
                yield out
        if out := replacer.flush():
            yield out

    return transform


def speech_text_transform(config: SpeechTextConfig) -> TextTransform:
    """Markdown and emoji filtering (livekit's streaming filters), then whole-word replacements.

    Replacements run last so "**Dr.** Lee" becomes "Doctor Lee". Every stage streams: text
    waits only as long as a pattern could still be incomplete, never for the whole answer.
    """
    stages: list[TextTransform] = []
    if config.strip_markdown:
        stages.append(filter_markdown)
    if config.strip_emoji:
        stages.append(filter_emoji)
    if config.replacements:
        stages.append(replace_words(config.replacements))

    def transform(text: AsyncIterable[str]) -> AsyncIterable[str]:
        stream = text
        for stage in stages:
            stream = stage(stream)
        return stream

    return transform


class DianaAgent(Agent):
    """The demo's default agent: its instructions only. The speech-text clean-up belongs to the session
    (:func:`build_session`), so any agent, yours included (:mod:`workbench.pipeline.agents`), gets it."""

    def __init__(self, *, instructions: str = DEFAULT_INSTRUCTIONS, **kwargs: Any) -> None:
        super().__init__(instructions=instructions, **kwargs)


def build_agent(*, instructions: str = DEFAULT_INSTRUCTIONS, **kwargs: Any) -> DianaAgent:
    """The default agent, from the suite's (or promoted file's) instructions (``kwargs``: e.g. ``chat_ctx``)."""
    return DianaAgent(instructions=instructions, **kwargs)


def speech_text_config(speech_text: SpeechTextConfig | Mapping[str, Any] | None) -> SpeechTextConfig:
    """The suite's (or promoted file's) ``speech_text`` as a config; ``None``: the defaults."""
    if isinstance(speech_text, SpeechTextConfig):
        return speech_text
    return SpeechTextConfig.model_validate(dict(speech_text or {}))


def session_text_transforms(
    speech_text: SpeechTextConfig | Mapping[str, Any] | None,
) -> list[TextTransform] | None:
    """The session's ``tts_text_transforms``: the one clean-up stage, or ``None`` when every step is off."""
    cfg = speech_text_config(speech_text)
    if not (cfg.strip_markdown or cfg.strip_emoji or cfg.replacements):
        return None
    return [speech_text_transform(cfg)]


def interruption_options(turn: Any) -> dict[str, Any]:
    """The config's barge-in settings as LiveKit's ``InterruptionOptions`` (detection by VAD, reproducible)."""
    return {
        "enabled": turn.allow_interruptions,
        "mode": "vad",
        "min_duration": turn.min_interruption_duration,
        "min_words": turn.min_interruption_words,
        "false_interruption_timeout": turn.false_interruption_timeout,
        "resume_false_interruption": turn.resume_false_interruption,
    }


def build_session(
    stack: ModelStack,
    strategy: llm.LLM,
    *,
    mode: Literal["text", "voice"] = "text",
    tts_kind: str | None = None,
    speech_text: SpeechTextConfig | Mapping[str, Any] | None = None,
) -> AgentSession:
    """An ``AgentSession`` with the strategy as its LLM; voice mode adds VAD, STT, TTS, turn detection.

    ``speech_text`` (``None``: :class:`SpeechTextConfig`'s defaults) becomes the session's
    ``tts_text_transforms``, replacing livekit's default markdown/emoji filters: the clean-up runs once,
    on the text going into whichever agent's ``tts_node`` (an overridden one too), never on the
    transcript or the chat history, and ``strip_markdown: false`` really keeps markdown.
    """
    transforms = session_text_transforms(speech_text)
    if mode == "text":
        # manual turn detection and no VAD: typed turns need neither an end-of-turn model nor the default
        # Silero VAD the session would otherwise start (their per-session start-up is pure overhead)
        return AgentSession(
            vad=None,
            llm=for_session(strategy),
            turn_handling={"turn_detection": "manual", "preemptive_generation": {"enabled": False}},
            tts_text_transforms=transforms,
        )
    cfg = stack.config.turn
    session_stt, detection = for_session(stack.stt()), stack.turn_detection()
    # a batch STT transcribes each VAD segment after it ends: the end of turn waits for the last one
    session_vad = stack.vad()
    if cfg.wait_for_transcript and detection == "vad" and not session_stt.capabilities.streaming:
        session_stt = PendingSTT(session_stt)
        detection = TranscriptGate(session_stt)
    if cfg.early_transcript_s is not None and not session_stt.capabilities.streaming:
        session_stt = EarlyTranscripts(stt=session_stt, vad=session_vad, after_s=cfg.early_transcript_s)
    return AgentSession(
        vad=session_vad,
        stt=session_stt,
        llm=for_session(strategy),
        tts=for_session(stack.tts(tts_kind)),
        turn_handling={
            "turn_detection": detection,
            "endpointing": {"min_delay": cfg.min_endpointing_delay, "max_delay": cfg.max_endpointing_delay},
            "preemptive_generation": {"enabled": cfg.preemptive_generation, "preemptive_tts": cfg.preemptive_tts},
            "interruption": interruption_options(cfg),
        },
        aec_warmup_duration=None,
        user_away_timeout=None,
        tts_text_transforms=transforms,
    )
