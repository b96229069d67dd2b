"""Retrieval strategies: one wrapper that feeds retrieved passages to an inner strategy, and the extractive baseline.

:class:`RetrievalStrategy` retrieves for the caller's last message and hands the inner strategy a copy of the
turn with the passages in its leading instructions or in its user turn (``placement``). Three kinds are that
wrapper: ``rag`` (around ``plain``), ``rag_middleware`` (around any strategy, ``inner:``) and ``hybrid`` (around
``autogen`` or ``multi_agent``, in :mod:`.agents`). ``rag_llm_node`` does the same inside an ``Agent.llm_node``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from livekit.agents import Agent, llm
from livekit.agents.voice import ModelSettings
from pydantic import field_validator

from workbench.knowledge import KnowledgeError, open_index
from workbench.models import ModelStack
from workbench.strategies.base import Passage, Strategy, StrategyOptions, StrategyTurn, last_user_message
from workbench.strategies.builtin import PlainStrategy
from workbench.strategies.context import with_context_in_instructions, with_context_in_user_turn
from workbench.strategies.registry import build, register

Placement = Literal["instructions", "user_turn"]
PLACE: dict[str, Callable[[llm.ChatContext, list[Passage]], llm.ChatContext]] = {
    "instructions": with_context_in_instructions,
    "user_turn": with_context_in_user_turn,
}
# an inner strategy runs inside its wrapper's turn, so only the wrapper's recovery keys can act
RECOVERY_KEYS = frozenset({"first_chunk_timeout_s", "chunk_timeout_s", "fallback", "apology"})


class RetrievalOptions(StrategyOptions):
    knowledge: str | None = None  # folder of documents; the runner fills in the suite's dataset
    top_k: int = 3


def open_knowledge(cfg: RetrievalOptions, stack: ModelStack) -> Any:
    """The strategy's index. No folder is an error, not a default: answers from someone else's documents
    would look like a working strategy."""
    if not cfg.knowledge:
        raise KnowledgeError(
            "a retrieval strategy needs `knowledge:`, a folder of documents (a suite fills it in with its "
            "dataset's knowledge/ folder)"
        )
    return open_index(Path(cfg.knowledge), stack)


async def retrieve_into(
    chat_ctx: llm.ChatContext, index: Any, top_k: int, placement: Placement
) -> tuple[llm.ChatContext, list[Passage]]:
    """Passages for the caller's last message, and a copy of ``chat_ctx`` carrying them where ``placement`` says."""
    msg = last_user_message(chat_ctx)
    passages: list[Passage] = await index.aretrieve(msg.text_content or "", top_k) if msg else []
    return PLACE[placement](chat_ctx, passages), passages


def spec_from_keys(cls: type[Strategy], config: StrategyOptions) -> dict[str, Any]:
    """A spec for ``cls`` from the keys of ``config`` it also has (endpoint, agent settings), without a fallback:
    the wrapping strategy's turn recovers."""
    keys = set(cls.Config.model_fields) - {"fallback"}
    return {"kind": cls.kind, **config.model_dump(include=keys)}


class RetrievalStrategy(Strategy):
    """Retrieved passages put into an inner strategy's prompt: its leading instructions or a copy of its user turn.

    The inner strategy's ``generate`` runs inside this strategy's turn: one trace (with ``contexts``, the passages,
    for scoring), and this strategy's timeouts, fallback and apology. Subclasses say which inner (:meth:`inner_spec`).
    """

    uses_endpoint: ClassVar[bool] = False  # the inner strategy reaches the model

    class Config(RetrievalOptions):
        placement: Placement = "instructions"

    config: Config

    def __init__(
        self,
        config: Config | None = None,
        *,
        stack: ModelStack | None = None,
        inner: Strategy | None = None,
        index: Any = None,
    ) -> None:
        super().__init__(config, stack=stack)
        self.inner = build(self.inner_spec(), self.stack) if inner is None else inner
        self.index = open_knowledge(self.config, self.stack) if index is None else index

    def inner_spec(self) -> str | dict[str, Any]:
        """The strategy the passages are fed to, built on this strategy's stack."""
        raise NotImplementedError

    @property
    def prompt_budget(self) -> int:
        return self.config.history_tokens or self.inner.prompt_budget

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        ctx, turn.trace.contexts = await retrieve_into(
            turn.chat_ctx, self.index, self.config.top_k, self.config.placement
        )
        async for chunk in self.inner.generate(turn.passed_to(self.inner, ctx)):
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()
        await super().aclose()


@register
class RagStrategy(RetrievalStrategy):
    """Direct RAG: top-k passages put into the leading instructions, then the base LLM streams."""

    kind = "rag"

    def inner_spec(self) -> dict[str, Any]:
        return spec_from_keys(PlainStrategy, self.config)


@register
class RagMiddlewareStrategy(RetrievalStrategy):
    """RAG as middleware: a rewritten copy of the user turn carries the context into any inner strategy."""

    kind = "rag_middleware"

    class Config(RetrievalStrategy.Config):
        placement: Placement = "user_turn"
        inner: str | dict[str, Any] = "plain"

        @field_validator("inner")
        @classmethod
        def _recovery_is_the_wrappers(cls, inner: str | dict[str, Any]) -> str | dict[str, Any]:
            """Recovery keys under ``inner`` would never act: say where they go instead of ignoring them."""
            if isinstance(inner, dict) and (misplaced := sorted(RECOVERY_KEYS & set(inner))):
                raise ValueError(f"put {', '.join(misplaced)} on the rag_middleware strategy, not under inner")
            return inner

    config: Config

    def inner_spec(self) -> str | dict[str, Any]:
        return self.config.inner


def rag_llm_node(index: Any, top_k: int = 3, on_passages: Any = None, placement: Placement = "user_turn") -> Any:
    """An ``Agent.llm_node`` override that adds retrieved context to a copy of the user turn (or the instructions).

    Usage: ``class MyAgent(Agent): llm_node = rag_llm_node(open_index(folder))``. Works around any LLM,
    including another strategy, and leaves the session's history holding the caller's own words.
    """

    async def llm_node(
        self: Agent, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[llm.ChatChunk]:
        ctx, passages = await retrieve_into(chat_ctx, index, top_k, placement)
        if on_passages is not None:
            on_passages(passages)
        async for chunk in Agent.default.llm_node(self, ctx, tools, model_settings):
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
    uses_endpoint: ClassVar[bool] = False

    class Config(RetrievalOptions):
        top_k: int = 1
        max_words: int = 45
        min_score: float | None = None  # below it, say ``no_answer`` instead
        no_answer: str = "I'm sorry, I don't have that information. Shall I connect you with the front desk?"

    config: Config

    def __init__(self, config: Config | None = None, *, stack: ModelStack | None = None, index: Any = None) -> None:
        super().__init__(config, stack=stack)
        self.index = open_knowledge(self.config, self.stack) if index is None else index

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        cfg = self.config
        passages: list[Passage] = await self.index.aretrieve(turn.user_text, max(1, cfg.top_k))
        turn.trace.contexts = passages
        best = passages[0] if passages else None
        if best is None or (cfg.min_score is not None and best.score < cfg.min_score):
            yield cfg.no_answer
            return
        text = speakable(best.text, cfg.max_words)
        for i, sentence in enumerate(_SENTENCE.split(text)):  # sentence-sized chunks let TTS start at once
            yield sentence if i == 0 else " " + sentence
