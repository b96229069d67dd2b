"""rag, rag_middleware and extractive against a scripted endpoint and a fixed fake index."""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit.agents import Agent, AgentSession, llm

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.knowledge import KnowledgeError
from workbench.models import ModelStack
from workbench.scoring.facts import fact_recall
from workbench.strategies import build
from workbench.strategies.base import Passage
from workbench.strategies.rag import (
    ExtractiveStrategy,
    RagMiddlewareStrategy,
    RagStrategy,
    rag_llm_node,
    speakable,
)
from workbench.strategies.registry import with_knowledge

HOURS = Passage(
    "# Hours\n\nMain Street is open 8 am to 6 pm on weekdays.\n\n- Closed Sundays", "knowledge/hours.md", 0.8
)
PARKING = Passage("Parking is free for 90 minutes in the Harbor garage.", "knowledge/parking.md", 0.4)


class FakeIndex:
    """Answers every query with the same passages and counts the queries."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages, self.queries = passages, []

    async def aretrieve(self, query: str, top_k: int = 3) -> list[Passage]:
        self.queries.append(query)
        return self.passages[:top_k]


@pytest.fixture
async def endpoint():
    async with ScriptedEndpoint(Script(text="We open at 8 am.")) as ep:
        yield ep


def stack_for(ep: ScriptedEndpoint, tmp_path: Path) -> ModelStack:
    cfg = WorkbenchConfig(llm=EndpointConfig(kind="openai", base_url=ep.base_url, model="m"), state_dir=tmp_path)
    return ModelStack(cfg)


def ctx_with(*turns: tuple[str, str]) -> llm.ChatContext:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are Diana.")
    for role, text in turns:
        ctx.add_message(role=role, content=text)
    return ctx


async def answer(strategy, ctx: llm.ChatContext) -> str:
    async with strategy.chat(chat_ctx=ctx) as stream:
        return "".join([c.delta.content or "" async for c in stream if c.delta])


async def test_rag_puts_context_in_the_leading_instructions_and_traces_passages(endpoint, tmp_path) -> None:
    stack = stack_for(endpoint, tmp_path)
    index = FakeIndex([HOURS, PARKING])
    rag = RagStrategy(RagStrategy.Config(top_k=2), stack=stack, index=index)
    ctx = ctx_with(("user", "When do you open?"))
    assert await answer(rag, ctx) == "We open at 8 am."
    messages = endpoint.chat_requests[-1].messages
    assert [m["role"] for m in messages] == ["system", "user"]  # no trailing system message
    assert "You are Diana." in messages[0]["content"] and "8 am to 6 pm" in messages[0]["content"]
    assert "<documents>" in messages[0]["content"] and messages[1]["content"] == "When do you open?"
    trace = rag.trace_for(ctx.items[-1].id)
    assert [p.source for p in trace.contexts] == ["knowledge/hours.md", "knowledge/parking.md"]
    assert index.queries == ["When do you open?"]
    await rag.aclose()


async def test_rag_middleware_rewrites_a_copy_and_the_history_keeps_the_callers_words(endpoint, tmp_path) -> None:
    stack = stack_for(endpoint, tmp_path)
    mw = RagMiddlewareStrategy(RagMiddlewareStrategy.Config(top_k=1), stack=stack, index=FakeIndex([HOURS]))
    ctx = ctx_with(("user", "Are you open on Sunday?"), ("assistant", "No."), ("user", "And Monday?"))
    assert await answer(mw, ctx) == "We open at 8 am."
    sent = endpoint.chat_requests[-1].messages
    assert sent[0]["content"] == "You are Diana."  # instructions untouched
    assert sent[-1]["role"] == "user" and "8 am to 6 pm" in sent[-1]["content"]
    assert sent[-1]["content"].endswith("Question: And Monday?")
    assert sent[1]["content"] == "Are you open on Sunday?"  # earlier turns are not rewritten
    assert ctx.items[-1].text_content == "And Monday?"  # the session's history is the caller's words
    assert [p.source for p in mw.trace_for(ctx.items[-1].id).contexts] == ["knowledge/hours.md"]
    await mw.aclose()


async def test_rag_llm_node_hook_in_an_agent_session(endpoint, tmp_path) -> None:
    stack = stack_for(endpoint, tmp_path)
    seen: list[list[Passage]] = []

    class ClinicAgent(Agent):
        llm_node = rag_llm_node(FakeIndex([PARKING]), top_k=1, on_passages=seen.append)

    async with AgentSession(llm=stack.llm()) as session:
        await session.start(ClinicAgent(instructions="You are Diana."))
        result = await session.run(user_input="Where do I park?")
    result.expect.next_event().is_message(role="assistant")
    assert seen and seen[0][0].source == "knowledge/parking.md"
    assert "Harbor garage" in endpoint.chat_requests[-1].messages[-1]["content"]
    users = [m for m in session.history.items if getattr(m, "role", None) == "user"]
    assert users[-1].text_content == "Where do I park?"


async def test_extractive_speaks_the_best_passage_without_calling_a_model(endpoint, tmp_path) -> None:
    cfg = ExtractiveStrategy.Config(max_words=12)
    ex = ExtractiveStrategy(cfg, index=FakeIndex([HOURS, PARKING]))
    ctx = ctx_with(("user", "When do you open?"))
    text = await answer(ex, ctx)
    assert text == "Main Street is open 8 am to 6 pm on weekdays."
    assert endpoint.chat_requests == []
    trace = ex.trace_for(ctx.items[-1].id)
    assert trace.first_chunk_s is not None and trace.first_chunk_s < 0.05


async def test_extractive_says_no_answer_below_min_score(tmp_path) -> None:
    cfg = ExtractiveStrategy.Config(min_score=0.9)
    ex = ExtractiveStrategy(cfg, index=FakeIndex([PARKING]))
    assert await answer(ex, ctx_with(("user", "Can I bring my dog?"))) == cfg.no_answer


def test_speakable_reads_markdown_as_sentences() -> None:
    text = "# Insurance\n\nWe accept these plans:\n\n- Aetna\n- **Cigna**\n\nSee [our page](http://x) for more."
    assert speakable(text) == "We accept these plans: Aetna, Cigna. See our page for more."
    assert speakable("One two three. Four five six. Seven eight.", max_words=6) == "One two three. Four five six."


async def test_the_wrappers_timeouts_and_fallback_govern_its_inner_strategy(endpoint, tmp_path) -> None:
    stack = stack_for(endpoint, tmp_path)
    endpoint.push(Script(fault="hang"))
    cfg = RagMiddlewareStrategy.Config(top_k=1, first_chunk_timeout_s=0.2)
    mw = RagMiddlewareStrategy(cfg, stack=stack, index=FakeIndex([PARKING]))
    mw.fallback = ExtractiveStrategy(index=FakeIndex([HOURS]))
    ctx = ctx_with(("user", "When do you open?"))
    assert await answer(mw, ctx) == "Main Street is open 8 am to 6 pm on weekdays. Closed Sundays."
    trace = mw.trace_for(ctx.items[-1].id)
    assert (trace.error_kind, trace.fallback, trace.partial) == ("timeout", "extractive", False)
    assert [p.source for p in trace.contexts] == ["knowledge/parking.md"]  # what the wrapper retrieved
    await mw.aclose()


def test_recovery_keys_under_inner_are_refused_with_where_they_belong() -> None:
    with pytest.raises(ValueError, match="put apology, fallback on the rag_middleware strategy, not under inner"):
        RagMiddlewareStrategy.Config(inner={"kind": "plain", "fallback": "extractive", "apology": None})
    assert RagMiddlewareStrategy.Config(inner={"kind": "plain", "endpoint": "default"}).placement == "user_turn"
    assert RagStrategy.Config().placement == "instructions"


@pytest.mark.parametrize("kind", ["rag", "rag_middleware", "hybrid", "extractive"])
def test_a_retrieval_strategy_without_a_knowledge_folder_is_a_clear_error(
    kind: str, scripted_stack: ModelStack
) -> None:
    with pytest.raises(KnowledgeError, match="needs `knowledge:`"):
        build({"kind": kind}, scripted_stack)


def test_a_fallback_searches_the_outer_strategys_knowledge_unless_it_names_its_own() -> None:
    spec = {"kind": "rag", "knowledge": "/docs/a", "fallback": {"kind": "extractive"}}
    got = with_knowledge(spec, spec["knowledge"])
    assert got["fallback"] == {"kind": "extractive", "knowledge": "/docs/a"}
    own = with_knowledge({"kind": "rag", "fallback": {"kind": "extractive", "knowledge": "/docs/b"}}, "/docs/a")
    assert own["fallback"]["knowledge"] == "/docs/b" and own["knowledge"] == "/docs/a"
    assert with_knowledge({"kind": "plain"}, "/docs/a") == {"kind": "plain"}  # no documents to search


PRICE_TABLE = Passage(
    "# Prices\n\nOur self-pay prices:\n\n| Service | Price |\n|---|---:|\n| Basic check | $20 |\n"
    "| **Full exam** | $135 |\n\nCall [billing](http://x) at extension 2.",
    "knowledge/prices.md",
    0.9,
)
LISTS = Passage(
    "## Booking\n\nYou can book in three ways:\n\n1. By phone: call extension 1.\n2. Online: use the *portal*.\n\n"
    "---\n\nPrices:\n\n- Cleaning (60 minutes): $125\n* New patient cleaning with X-rays: $185\n\n"
    "Lakeside hours\n--------------\n\n+ Monday to Friday: 9 am to 7 pm",
    "knowledge/booking.md",
    0.9,
)


def assert_spoken(text: str) -> None:
    """No Markdown a voice would read out: table pipes, rules, list markers, headings, emphasis."""
    assert "|" not in text and "---" not in text and "#" not in text and "*" not in text and "](" not in text
    for sentence in text.split(". "):
        assert not sentence.startswith(("- ", "* ", "+ ", "1. ", "2. ")), sentence
    assert text.endswith(".")


@pytest.mark.parametrize(
    ("passage", "facts", "said"),
    [
        (
            PRICE_TABLE,
            ["basic check $20", "full exam 135 dollars", "extension 2"],
            "Our self-pay prices. Basic check: $20. Full exam: $135. Call billing at extension 2.",
        ),
        (
            LISTS,
            [
                "phone call extension 1",
                "portal",
                "cleaning 60 minutes $125",
                "X-rays: $185",
                "Monday to Friday 9 am to 7 pm",
            ],
            "You can book in three ways. By phone: call extension 1. Online: use the portal. Prices. Cleaning "
            "(60 minutes): $125. New patient cleaning with X-rays: $185. Lakeside hours. Monday to Friday: 9 am "
            "to 7 pm.",
        ),
    ],
)
async def test_extractive_says_tables_and_lists_as_sentences_and_keeps_the_facts(
    passage: Passage, facts: list[str], said: str
) -> None:
    ex = ExtractiveStrategy(ExtractiveStrategy.Config(max_words=60), index=FakeIndex([passage]))
    text = await answer(ex, ctx_with(("user", "How much is it?")))
    assert text == said
    assert_spoken(text)
    assert fact_recall(facts, text) == 1.0
    assert fact_recall(facts, passage.text) == 1.0  # the same facts the document states


def test_speakable_names_table_columns_and_reads_a_table_cut_from_its_header() -> None:
    wide = "| Service | Main Street | Lakeside |\n| :--- | ---: | --- |\n| Basic check | $20 | $25 |"
    assert speakable(wide) == "Basic check: Main Street $20, Lakeside $25."
    assert speakable("| Basic check | $20 |\n| Full exam | $135 |") == "Basic check: $20. Full exam: $135."
    # a heading over prose is dropped; over a list it says what the items are about
    assert speakable("# Hours\n\nWe open at 8 am.") == "We open at 8 am."
    assert speakable("## Lakeside\n\n- Monday: 9 am to 7 pm") == "Lakeside. Monday: 9 am to 7 pm."
    # words with underscores, emails and prose dashes are not markup
    said = speakable("Email front_desk@clinic.example or __call__ us - any day.")
    assert said == "Email front_desk@clinic.example or call us - any day."
