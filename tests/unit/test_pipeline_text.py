"""Text clean-up before TTS: whole-word replacements across chunk boundaries, markdown off, streaming."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit.agents import Agent
from pydantic import ValidationError

from workbench.pipeline import (
    DEFAULT_INSTRUCTIONS,
    DianaAgent,
    SpeechTextConfig,
    WordReplacer,
    build_agent,
    build_session,
    replace_words,
    speech_text_transform,
)

REPLACEMENTS = {"Dr.": "Doctor", "St.": "Street", "DianaChat": "Diana Chat", "Dr": "Drive", "St. Mary": "Saint Mary"}


async def _aiter(chunks: list[str]) -> AsyncIterator[str]:
    for c in chunks:
        yield c


async def _collect(transform, chunks: list[str]) -> list[str]:
    return [c async for c in transform(_aiter(chunks))]


def _one_shot(text: str) -> str:
    r = WordReplacer(REPLACEMENTS)
    return r.feed(text) + r.flush()


async def test_a_key_split_across_chunks_is_still_replaced() -> None:
    chunks = ["Please see D", "r", ". Lee on Main S", "t", ". today, says Diana", "Chat."]
    out = await _collect(replace_words(REPLACEMENTS), chunks)
    assert "".join(out) == "Please see Doctor Lee on Main Street today, says Diana Chat."


def test_whole_words_only_and_case_insensitive() -> None:
    text = "the first. Dry Drew st. mary dianachat DR. lee STREET St.Louis"
    assert _one_shot(text) == "the first. Dry Drew Saint Mary Diana Chat Doctor lee STREET St.Louis"


def test_longest_key_wins_and_a_key_at_the_very_end_is_replaced() -> None:
    assert _one_shot("Visit St. Mary") == "Visit Saint Mary"
    assert _one_shot("Visit St. Marys") == "Visit Street Marys"  # "St. Mary" is not a whole word here
    assert _one_shot("Ask Dr") == "Ask Drive"


def test_only_a_possible_key_prefix_is_held_back() -> None:
    r = WordReplacer(REPLACEMENTS)
    assert r.feed("Our clinic is on Main S") == "Our clinic is on Main "  # "S" may become "St."
    assert r.feed("unset road") == "Sunset road"  # it did not: released with the next chunk
    assert r.feed(" in the first") == " in the first"  # "st" inside a word can never start a key
    assert r.flush() == ""


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("Dr.St MayDianChat,x\n")), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_any_chunking_gives_the_one_shot_result(text: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    r = WordReplacer(REPLACEMENTS)
    streamed = "".join(r.feed(c) for c in chunks) + r.flush()
    keys = sorted(REPLACEMENTS, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, keys)) + r")(?!\w)", re.IGNORECASE)
    lookup = {k.lower(): v for k, v in REPLACEMENTS.items()}
    assert streamed == pattern.sub(lambda m: lookup[m.group(0).lower()], text)


async def test_markdown_is_stripped_to_speakable_text() -> None:
    chunks = [
        "# Opening",
        " hours\n",
        "**Dr.",
        "** Lee sees *walk-ins* at [Main St.](https://x.org/a)",
        "\n",
        "- Mon",
        "day `9am`\n",
        "1. ~~closed~~ open 😀\n",
    ]
    out = "".join(await _collect(speech_text_transform(SpeechTextConfig()), chunks))
    assert out == "Opening hours\nDoctor Lee sees walk-ins at Main Street\nMonday 9am\n1.  open \n"
    assert not set(out) & set("#*[]()`~_")


async def test_markdown_kept_when_switched_off() -> None:
    cfg = SpeechTextConfig(strip_markdown=False, strip_emoji=False, replacements={})
    out = "".join(await _collect(speech_text_transform(cfg), ["**Dr.** Lee 😀"]))
    assert out == "**Dr.** Lee 😀"


async def test_the_transform_streams_first_words_before_the_answer_ends() -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def source() -> AsyncIterator[str]:
        while (item := await queue.get()) is not None:
            yield item

    stream = speech_text_transform(SpeechTextConfig())(source()).__aiter__()
    queue.put_nowait("Hello, this is **Diana** ")
    queue.put_nowait("at the ")
    first = await asyncio.wait_for(anext(stream), 1.0)  # the source is still open
    assert first.startswith("Hello,")
    for c in ["clinic on Main St.", " Goodbye."]:
        queue.put_nowait(c)
    queue.put_nowait(None)
    rest = [c async for c in stream]
    assert first + "".join(rest) == "Hello, this is Diana at the clinic on Main Street Goodbye."


async def test_session_cleans_the_text_fed_to_the_agents_tts_node() -> None:
    """The clean-up is the session's ``tts_text_transforms``: livekit applies it to the text going into the
    agent's (any agent's) ``tts_node``; the default agent has no ``tts_node`` of its own."""
    from livekit.agents.voice.transcription.text_transforms import _apply_text_transforms

    session = build_session(None, None, mode="text", speech_text={"replacements": {"DianaChat": "Diana Chat"}})  # type: ignore[arg-type]
    assert type(build_agent()).tts_node is Agent.tts_node
    text = _apply_text_transforms(
        _aiter(["Welcome to **Diana", "Chat**, ask ", "Dr. Lee."]), session.options.tts_text_transforms or []
    )
    assert "".join([c async for c in text]) == "Welcome to Diana Chat, ask Dr. Lee."  # the map replaced the defaults


def test_build_agent_defaults_and_config() -> None:
    agent = build_agent()
    assert isinstance(agent, DianaAgent) and agent.instructions == DEFAULT_INSTRUCTIONS
    custom = build_agent(instructions="Be brief.")
    assert custom.instructions == "Be brief."


def test_bad_replacement_maps_are_rejected() -> None:
    with pytest.raises(ValidationError, match="non-blank"):
        SpeechTextConfig(replacements={" ": "x"})
    with pytest.raises(ValidationError, match="differ only in case"):
        SpeechTextConfig(replacements={"Dr.": "Doctor", "dr.": "drive"})
    with pytest.raises(ValidationError):
        SpeechTextConfig(replacements={}, strip_markdwn=False)  # a typo is an error, not ignored


async def test_session_level_transforms_are_the_clean_up_so_text_is_cleaned_once() -> None:
    session = build_session(None, None, mode="text")  # type: ignore[arg-type]  (text mode touches no model)
    transforms = session.options.tts_text_transforms
    assert transforms is not None and len(transforms) == 1 and callable(transforms[0])  # ours, not livekit's names
    off = {"replacements": {}, "strip_markdown": False, "strip_emoji": False}
    assert build_session(None, None, mode="text", speech_text=off).options.tts_text_transforms is None  # type: ignore[arg-type]
