"""Retrieval strategies: direct RAG, RAG as middleware around any strategy, and the extractive baseline."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

from livekit.agents import Agent, llm
from livekit.agents.voice import ModelSettings

from workbench.models import ModelStack, ResolvedEndpoint
from workbench.strategies.base import Passage, Strategy, StrategyOptions, Turn
from workbench.strategies.builtin import stream_llm
from workbench.strategies.context import with_context_in_instructions, with_context_in_user_turn
from workbench.strategies.registry import build, register

DEMO_KNOWLEDGE = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo" / "knowledge"


class RetrievalOptions(StrategyOptions):
    knowledge: str | None = None  # folder of documents; the runner fills in the suite's dataset
    top_k: int = 3


def open_knowledge(cfg: RetrievalOptions, stack: ModelStack) -> Any:
    from workbench.knowledge import open_index

    return open_index(Path(cfg.knowledge) if cfg.knowledge else DEMO_KNOWLEDGE, stack)


@register
class RagStrategy(Strategy):
    """Direct RAG: top-k passages put into the leading instructions, then the base LLM streams."""

    kind = "rag"

    class Config(RetrievalOptions):
        pass

    def __init__(
        self, base: llm.LLM, index: Any, endpoint: ResolvedEndpoint | None = None, top_k: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.base, self.index, self.endpoint, self.top_k = base, index, endpoint, top_k

    @classmethod
    def from_config(cls, cfg: Config, stack: ModelStack, **kwargs: Any) -> RagStrategy:
        ep = stack.endpoint(cfg.endpoint)
        return cls(
            stack.llm(cfg.endpoint),
            open_knowledge(cfg, stack),
            ep,
            cfg.top_k,
            options=cfg,
            prompt_budget=ep.config.prompt_budget(),
            **kwargs,
        )

    async def generate(self, turn: Turn) -> AsyncIterator[str | llm.ChatChunk]:
        turn.trace.contexts = passages = await self.index.aretrieve(turn.user_text, self.top_k)
        ctx = with_context_in_instructions(turn.chat_ctx, passages)
        async for chunk in stream_llm(self.base, turn, self.endpoint, chat_ctx=ctx):
            yield chunk

    async def aclose(self) -> None:
        await self.base.aclose()
        await super().aclose()


@register
class RagMiddlewareStrategy(Strategy):
    """RAG as middleware: a rewritten copy of the user turn carries the context into any inner strategy."""

    kind = "rag_middleware"

    class Config(RetrievalOptions):
        inner: str | dict[str, Any] = "plain"

    def __init__(self, inner: Strategy, index: Any, top_k: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner, self.index, self.top_k = inner, index, top_k
        self.prompt_budget = inner.prompt_budget

    @classmethod
    def from_config(cls, cfg: Config, stack: ModelStack, **kwargs: Any) -> RagMiddlewareStrategy:
        return cls(build(cfg.inner, stack), open_knowledge(cfg, stack), cfg.top_k, options=cfg, **kwargs)

    async def generate(self, turn: Turn) -> AsyncIterator[str | llm.ChatChunk]:
        turn.trace.contexts = passages = await self.index.aretrieve(turn.user_text, self.top_k)
        ctx = with_context_in_user_turn(turn.chat_ctx, passages)
        async with self.inner.chat(chat_ctx=ctx, tools=turn.tools, conn_options=turn.conn_options) as stream:
            async for chunk in stream:
                yield chunk
        inner_trace = self.inner.trace_for(turn.trace.user_message_id or "")
        if inner_trace is not None and inner_trace.error_kind:  # the inner strategy recovered on its own
            turn.trace.error_kind, turn.trace.fallback = inner_trace.error_kind, inner_trace.fallback

    async def aclose(self) -> None:
        await self.inner.aclose()
        await super().aclose()


def rag_llm_node(index: Any, top_k: int = 3, on_passages: Any = None) -> Any:
    """An ``Agent.llm_node`` override that adds retrieved context to a copy of the user turn.

    Usage: ``class MyAgent(Agent): llm_node = rag_llm_node(open_index(folder))``. Works around any LLM,
    including another strategy, and leaves the session's history holding the caller's own words.
    """

    async def llm_node(
        self: Agent, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[llm.ChatChunk]:
        from workbench.strategies.base import last_user_message

        msg = last_user_message(chat_ctx)
        passages = await index.aretrieve(msg.text_content or "", top_k) if msg else []
        if on_passages is not None:
            on_passages(passages)
        async for chunk in Agent.default.llm_node(
            self, with_context_in_user_turn(chat_ctx, passages), tools, model_settings
        ):
            yield chunk

    return llm_node


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_INLINE = re.compile(r"[*_`]|\[([^\]]*)\]\([^)]*\)")


def _spoken_lines(text: str) -> list[str]:
    """Markdown to lines a voice can read: headings dropped, list items joined into one sentence."""
    lines, items = [], []
    for raw in text.splitlines():
        line = _INLINE.sub(lambda m: m.group(1) or "", raw).strip()
        if not line or line.startswith("#"):
            continue
        if _BULLET.match(line):
            items.append(_BULLET.sub("", line).rstrip(".;,"))
            continue
        if items:
            lines.append(", ".join(items) + ".")
            items = []
        lines.append(line)
    if items:
        lines.append(", ".join(items) + ".")
    merged: list[str] = []
    for line in lines:  # "plans:" followed by the list reads as one sentence
        if merged and merged[-1].endswith(":"):
            merged[-1] = f"{merged[-1]} {line}"
        else:
            merged.append(line if line.endswith((".", "!", "?", ":")) else line + ".")
    return merged


def speakable(text: str, max_words: int = 45) -> str:
    """A passage trimmed to whole sentences within ``max_words``, markup removed: something a voice can say."""
    sentences = [s for ln in _spoken_lines(text) for s in _SENTENCE.split(ln)]
    out: list[str] = []
    words = 0
    for s in sentences:
        n = len(s.split())
        if out and words + n > max_words:
            break
        out.append(s)
        words += n
    return " ".join(out)


@register
class ExtractiveStrategy(Strategy):
    """Speaks the best retrieved passage, trimmed for voice, with no generation: the fast FAQ-bot baseline."""

    kind = "extractive"

    class Config(RetrievalOptions):
        top_k: int = 1
        max_words: int = 45
        min_score: float | None = None  # below it, say ``no_answer`` instead
        no_answer: str = "I'm sorry, I don't have that information. Shall I connect you with the front desk?"

    def __init__(self, index: Any, cfg: Config, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index, self.cfg = index, cfg

    @classmethod
    def from_config(cls, cfg: Config, stack: ModelStack, **kwargs: Any) -> ExtractiveStrategy:
        return cls(open_knowledge(cfg, stack), cfg, options=cfg, **kwargs)

    async def generate(self, turn: Turn) -> AsyncIterator[str | llm.ChatChunk]:
        passages: list[Passage] = await self.index.aretrieve(turn.user_text, max(1, self.cfg.top_k))
        turn.trace.contexts = passages
        best = passages[0] if passages else None
        if best is None or (self.cfg.min_score is not None and best.score < self.cfg.min_score):
            yield self.cfg.no_answer
            return
        text = speakable(best.text, self.cfg.max_words)
        for i, sentence in enumerate(_SENTENCE.split(text)):  # sentence-sized chunks let TTS start at once
            yield sentence if i == 0 else " " + sentence
