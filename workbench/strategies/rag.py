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
from workbench.knowledge.chunking import split_sentences
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


# Markdown to speech, in one place. Passages keep their Markdown for LLM prompts (a model reads a table or a list
# well, and the index embeds the documents as written); whatever is *spoken* from a passage (extractive, and
# extractive as any strategy's fallback) goes through :func:`speakable`, so a table row, a list marker, a rule or
# a heading reaches TTS as a sentence, never as symbols. Words and numbers are kept as written ("$20" too: TTS
# reads it, and fact recall matches it).
_HEADING = re.compile(r"^#{1,6}(?:\s+|$)")
_BULLET = re.compile(r"^(?:[-*+\u2022]|\d{1,2}[.)])\s+")
_RULE = re.compile(r"^(?:(?:-\s*){3,}|(?:\*\s*){3,}|(?:_\s*){3,}|={3,})$")  # thematic break, setext underline
_TABLE_SEP = re.compile(r"^\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?$")  # |---|:--:|
_CELL = re.compile(r"(?<!\\)\|")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)|<((?:https?://|mailto:)[^>\s]+)>")
_EMPHASIS = re.compile(r"(\*\*|~~|\*|(?<!\w)__|(?<!\w)_)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")
_SHORT_ITEM_WORDS = 4  # a list of items this short reads as one sentence: "Aetna, Cigna, Sun Life."


def _inline(text: str) -> str:
    """Links to their text, emphasis and code markers off, escapes resolved; words and numbers untouched."""
    text = _LINK.sub(lambda m: m.group(1) or m.group(2) or "", text)
    for _ in range(3):  # ***bold italic*** nests
        text, n = _EMPHASIS.subn(r"\2", text)
        if not n:
            break
    text = text.replace("`", "").replace("**", "")
    return " ".join(_ESCAPE.sub(r"\1", text).split())


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [_inline(c).rstrip(".;,") for c in _CELL.split(row)]


def _row_sentence(cells: list[str], header: list[str] | None) -> str:
    """A table row as a sentence: its first cell, then the others. With two columns "Basic check: $20"; with more,
    each value after its column's name, "Basic check: Main Street $20, Lakeside $25". A row whose header row was
    cut off (a later chunk of a long table) reads its cells in order."""
    label, rest = cells[0], cells[1:]
    names = header[1:] if header is not None and len(header) == len(cells) and len(cells) > 2 else [""] * len(rest)
    values = [f"{name} {v}" if name else v for name, v in zip(names, rest, strict=True) if v]
    if not label:
        return ", ".join(values)
    return f"{label}: {', '.join(values)}" if values else label


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """The passage as (kind, spoken lines) blocks: a paragraph line, a heading, a list (short items joined into one
    line, longer ones a line each) or a table row (its header row and rule dropped)."""
    lines = [ln.strip() for ln in text.splitlines()]
    blocks: list[tuple[str, list[str]]] = []
    header: list[str] | None = None
    items: list[str] = []

    def end_list() -> None:
        if items:
            short = len(items) > 1 and all(len(i.split()) <= _SHORT_ITEM_WORDS and ":" not in i for i in items)
            blocks.append(("list", [", ".join(items)] if short else list(items)))
            items.clear()

    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_row = "|" in line and (line.startswith("|") or header is not None)
        header = header if is_row else None
        if _BULLET.match(line) and not _RULE.match(line):
            if item := _inline(_BULLET.sub("", line, count=1)).rstrip(".;,"):
                items.append(item)
            continue
        end_list()
        if not line or _RULE.match(line) or ("|" in line and _TABLE_SEP.match(line)):
            continue
        if "|" in line and "-" in nxt and _TABLE_SEP.match(nxt):  # a header row names the columns
            header = _cells(line)
        elif is_row:
            blocks.append(("row", [_row_sentence(_cells(line), header)]))
        elif _HEADING.match(line) or _RULE.match(nxt):  # ATX heading, or setext (text over === or ---)
            blocks.append(("heading", [_inline(_HEADING.sub("", line)).rstrip(".:")]))
        else:
            blocks.append(("text", [_inline(line)]))
    end_list()
    # a heading is said only where it names the list or table under it ("Lakeside. Monday to Friday: 8 am to 6 pm.")
    kept = [
        (kind, [ln for ln in said if ln])
        for (kind, said), after in zip(blocks, [k for k, _ in blocks[1:]] + [""], strict=True)
        if kind != "heading" or after in ("list", "row")
    ]
    return [(kind, said) for kind, said in kept if said]


def _spoken_lines(text: str) -> list[str]:
    """Markdown to lines a voice can read, each ending in a full stop (or its own ! or ?).

    A line ending in ":" joins the one after it when that is a single clause ("We accept these plans: Aetna,
    Cigna."); before a list of longer items or table rows it ends with a full stop instead of a double colon.
    """
    out: list[str] = []
    for _, said in _blocks(text):
        for line in said:
            if out and out[-1].endswith(":"):
                if len(said) == 1 and ":" not in line:
                    out[-1] = f"{out[-1]} {line}"
                    continue
                out[-1] = out[-1][:-1] + "."
            out.append(line)
    return [ln if ln.endswith((".", "!", "?")) else ln.rstrip(":") + "." for ln in out]


def speakable(text: str, max_words: int = 45) -> str:
    """A passage as sentences a voice can say, trimmed to whole sentences within ``max_words``."""
    sentences = [s.strip() for ln in _spoken_lines(text) for s in split_sentences(ln)]
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
        for sentence in split_sentences(speakable(best.text, cfg.max_words)):  # sentence-sized: TTS starts at once
            yield sentence
