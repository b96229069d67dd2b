"""AutoGen strategies against the scripted OpenAI-compatible endpoint: streaming, memory, cancellation, coordination;
and the team coordinator they share with AG2 (``strategies/teams.py``), driven by scripted members."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from agent_cases import (
    ANSWER,
    INSTRUCTIONS,
    LEAD,
    MORE,
    NOTES,
    by_role,
    chat_ctx,
    request_for,
    run_turn,
    running_tasks,
    system_text,
)
from autogen_core.models import AssistantMessage, UserMessage
from livekit.agents import llm

from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.strategies import teams
from workbench.strategies.agents import (
    AutoGenStrategy,
    HybridStrategy,
    MultiAgentStrategy,
    PooledOpenAIClient,
    to_autogen,
)
from workbench.strategies.base import Passage
from workbench.strategies.builtin import PlainStrategy
from workbench.strategies.registry import available, build
from workbench.strategies.teams import Ask, Team, TeamConfig, first_sentence, report_accepted, skip_repeat

pytestmark = pytest.mark.usefixtures("_warm_tokenizer")


# -- conversion -------------------------------------------------------------------------------------------


def test_chat_context_becomes_instructions_and_role_messages() -> None:
    ctx = chat_ctx(("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", "When do you open?"))
    ctx.add_message(role="system", content="The caller is a patient.")  # a late system message
    ctx.items.append(llm.FunctionCallOutput(call_id="c1", name="lookup", output="8 am", is_error=False))
    conv = to_autogen(ctx)
    assert conv.instructions == f"{INSTRUCTIONS}\n\nThe caller is a patient."
    assert [type(m) for m in conv.messages] == [UserMessage, AssistantMessage, UserMessage, AssistantMessage]
    assert [m.content for m in conv.messages] == [
        "Hi",
        "Hello, how can I help?",
        "When do you open?",
        "(lookup returned: 8 am)",
    ]


def test_registered_kinds_build_from_config(scripted_stack: ModelStack) -> None:
    kinds = available()
    assert {"autogen", "multi_agent", "hybrid"} <= set(kinds)
    s = build({"kind": "multi_agent", "coordination": "gather", "helpers": ["researcher", "planner"]}, scripted_stack)
    assert isinstance(s, MultiAgentStrategy) and s.config.coordination == "gather"
    assert s.config.helpers == ["researcher", "planner"]
    with pytest.raises(ValueError, match="coordination"):
        build({"kind": "multi_agent", "coordination": "fastest"}, scripted_stack)


def test_unknown_model_names_get_a_text_only_profile() -> None:
    client = PooledOpenAIClient(object(), model="smollm2-135m")
    assert client.model_info["function_calling"] is False and client.model_info["vision"] is False
    assert PooledOpenAIClient(object(), model="gpt-4o").model_info["vision"] is True


# -- the single agent -------------------------------------------------------------------------------------


async def test_autogen_streams_tokens_as_produced_and_sends_plains_prompt(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = Script(text=ANSWER, ttft_s=0.02, gap_s=0.03)
    ctx = chat_ctx(("user", "When do you open?"))
    plain = build("plain", scripted_stack)
    agent = build("autogen", scripted_stack)
    assert isinstance(plain, PlainStrategy) and isinstance(agent, AutoGenStrategy)
    await run_turn(plain, ctx)
    text, chunks = await run_turn(agent, ctx)
    plain_req, agent_req = endpoint.chat_requests
    assert text == ANSWER == "".join(agent_req.tokens_sent)
    assert len(chunks) == len(agent_req.tokens_sent) > 5
    assert chunks[0][0] < agent_req.token_times[1], "the first token must be passed on before the next one is sent"
    assert agent_req.messages == plain_req.messages  # same prompt: same cache hits on a real server
    assert agent_req.body["stream"] is True and agent_req.body["max_tokens"] == 48
    await agent.aclose()
    await plain.aclose()


async def test_autogen_keeps_no_memory_between_turns(endpoint: ScriptedEndpoint, scripted_stack: ModelStack) -> None:
    agent = build("autogen", scripted_stack)
    await run_turn(agent, chat_ctx(("user", "First question")))
    # the session's history is the source of truth: a turn sees exactly its chat context, nothing remembered
    await run_turn(agent, chat_ctx(("user", "Other history"), ("assistant", "Noted."), ("user", "Second question")))
    first, second = endpoint.chat_requests
    assert [m["content"] for m in first.messages] == [INSTRUCTIONS, "First question"]
    assert [(m["role"], m["content"]) for m in second.messages] == [
        ("system", INSTRUCTIONS),
        ("user", "Other history"),
        ("assistant", "Noted."),
        ("user", "Second question"),
    ]
    await agent.aclose()


async def test_model_client_is_shared_per_endpoint_and_loop(scripted_stack: ModelStack) -> None:
    a, b = build("autogen", scripted_stack), build("multi_agent", scripted_stack)
    assert isinstance(a, AutoGenStrategy) and isinstance(b, AutoGenStrategy)
    assert a.clients is b.clients
    assert a.clients.get() is b.clients.get() and a.clients.get(16) is not a.clients.get()
    assert a.clients.get()._client is scripted_stack.http_client(scripted_stack.endpoint())  # plain's pool


async def test_closing_the_stream_cancels_the_run_and_the_http_request(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = Script(text=" ".join(["word"] * 200), ttft_s=0.01, gap_s=0.02)
    agent = build("autogen", scripted_stack)
    async with agent.chat(chat_ctx=chat_ctx(("user", "Talk a lot"))) as stream:
        async for _ in stream:
            break  # the caller barges in after the first chunk
    closed_at = time.perf_counter()
    (req,) = endpoint.chat_requests
    assert await req.wait_done(1.0)
    assert req.disconnected and not req.completed
    assert req.disconnected_at is not None and req.disconnected_at - closed_at < 0.1
    assert len(req.tokens_sent) < 20
    assert not running_tasks("autogen-"), "the AutoGen run survived"
    await agent.aclose()


async def test_upstream_errors_keep_their_kind_and_fall_back_to_the_apology(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.push(Script(fault="http_500"))
    agent = build("autogen", scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, _ = await run_turn(agent, ctx)
    trace = agent.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind == "http_500" and trace.fallback == "apology"
    assert text == agent.options.apology
    await agent.aclose()


# -- the team ---------------------------------------------------------------------------------------------


async def test_gather_streams_nothing_until_every_helper_is_done(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = by_role(
        Script(text=NOTES, ttft_s=0.05, gap_s=0.01), Script(text="unused"), Script(text=MORE, ttft_s=0.03, gap_s=0.01)
    )
    team = build({"kind": "multi_agent", "coordination": "gather"}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, chunks = await run_turn(team, ctx)
    researcher, editor = endpoint.chat_requests
    assert text == MORE  # only the final call is spoken
    assert "You are now the researcher" in system_text(researcher) and "colleagues' notes" in system_text(editor)
    assert researcher.finished_at is not None
    # the helper's last note, then the editor's request, its first token, and only then our first chunk
    assert researcher.token_times[-1] <= editor.arrived <= editor.token_times[0] <= chunks[0][0]
    # the editor reads the caller's question once, then the researcher's notes
    assert [m["content"] for m in editor.messages[1:]] == ["When do you open?", NOTES]
    assert [m["content"] for m in researcher.messages[1:]] == ["When do you open?"]
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.notes["coordination"] == "gather" and trace.error_kind is None
    await team.aclose()


async def test_low_latency_speaks_before_the_helpers_finish_then_uses_their_notes(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = by_role(
        Script(text=NOTES, ttft_s=0.15, gap_s=0.01), Script(text=LEAD, ttft_s=0.1), Script(text=MORE, ttft_s=0.03)
    )
    team = build({"kind": "multi_agent", "coordination": "low_latency"}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, chunks = await run_turn(team, ctx)
    lead, researcher = request_for(endpoint, "Start your reply now"), request_for(endpoint, "the researcher")
    final = request_for(endpoint, "already said")
    assert lead.arrived <= researcher.arrived  # the lead-in is sent first (a one-slot server serves it first)
    # released by the lead-in's response headers, not by its first token
    assert researcher.arrived < lead.token_times[0] <= chunks[0][0]
    assert chunks[0][0] < researcher.token_times[0], "the first chunk must not wait for the helpers"
    assert final.arrived >= researcher.token_times[-1]
    assert f'"{LEAD}"' in system_text(final) and NOTES in system_text(final)
    assert text == f"{LEAD} {MORE}"
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.notes["helpers_partial"] is False
    await team.aclose()


async def test_low_latency_holds_the_helpers_until_the_server_has_taken_the_lead_in(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server never answers the lead-in (no headers): sent before it was queued, a helper could overtake it
    endpoint.default = by_role(Script(text=NOTES), Script(fault="hang"), Script(text=MORE))
    helpers_started = asyncio.Event()  # must stay unset
    real_init = teams._Helpers.__init__

    def init(self: Any, team: Any) -> None:
        helpers_started.set()
        real_init(self, team)

    monkeypatch.setattr(teams._Helpers, "__init__", init)
    team = build({"kind": "multi_agent", "coordination": "low_latency"}, scripted_stack)
    turn = asyncio.create_task(run_turn(team, chat_ctx(("user", "When do you open?"))))
    # the lead-in is sent after the team starts waiting for its acceptance: a team that did not wait
    # would have created its helpers by the time the server holds the lead-in
    (lead,) = await endpoint.wait_for_requests(1)
    assert "Start your reply now" in system_text(lead) and not helpers_started.is_set()
    turn.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await turn
    assert not helpers_started.is_set() and len(endpoint.chat_requests) == 1
    await team.aclose()


async def test_low_latency_continues_with_partial_notes_when_a_helper_is_slow(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    slow = Script(tokens=["- Main", " Street", " opens", " at", " eight."] + [" more"] * 50, ttft_s=0.01, gap_s=0.03)
    endpoint.default = by_role(slow, Script(text=LEAD, ttft_s=0.01), Script(text=MORE, ttft_s=0.01))
    team = build({"kind": "multi_agent", "helper_wait_s": 0.2}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    t0 = time.perf_counter()
    text, _ = await run_turn(team, ctx)
    assert time.perf_counter() - t0 < 0.6
    researcher, final = request_for(endpoint, "the researcher"), request_for(endpoint, "already said")
    assert await researcher.wait_done(1.0) and researcher.disconnected  # the unfinished helper was cancelled
    assert "- Main Street opens at eight." in system_text(final)  # it still used the partial notes
    assert text == f"{LEAD} {MORE}"
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.notes["helpers_partial"] is True
    await team.aclose()


async def test_low_latency_cuts_the_lead_in_at_its_first_sentence(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = by_role(
        Script(text=NOTES), Script(text=f"{LEAD} And then more words follow here."), Script(text=f" {LEAD} {MORE}")
    )  # a small model restarts
    team = build("multi_agent", scripted_stack)
    text, _ = await run_turn(team, chat_ctx(("user", "When do you open?")))
    assert text == f"{LEAD} {MORE}"
    await team.aclose()


async def test_closing_a_low_latency_turn_cancels_every_member(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    long = " ".join(["word"] * 200) + "."
    # the lead-in's TTFT leaves the helper's request time to arrive before the caller barges in
    lead = Script(text=long, ttft_s=0.1, gap_s=0.02)
    endpoint.default = by_role(Script(text=long, gap_s=0.02), lead, Script(text="x"))
    team = build("multi_agent", scripted_stack)
    async with team.chat(chat_ctx=chat_ctx(("user", "Talk a lot"))) as stream:
        async for _ in stream:
            break
    reqs = await endpoint.wait_for_requests(2)
    for r in reqs:
        assert await r.wait_done(1.0) and r.disconnected and not r.completed
    assert len(endpoint.chat_requests) == 2  # the continuation was never started
    assert not running_tasks("autogen-")
    await team.aclose()


async def test_low_latency_goes_on_when_a_helper_fails(endpoint: ScriptedEndpoint, scripted_stack: ModelStack) -> None:
    endpoint.default = by_role(Script(fault="http_500"), Script(text=LEAD), Script(text=MORE))
    team = build("multi_agent", scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, _ = await run_turn(team, ctx)
    assert text == f"{LEAD} {MORE}"
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind is None and trace.notes["helper_errors"] == {"researcher": "http_500"}
    await team.aclose()


async def tokens(*ts: str) -> Any:
    for t in ts:
        yield t


async def test_first_sentence_ends_only_at_a_stop_followed_by_a_space() -> None:
    rest = tokens("30", " today.", " And", " more.")
    said = [t async for t in first_sentence(rest, " We open at 9.")]
    assert "".join(said) == " We open at 9.30 today."
    assert [t async for t in rest] == [" more."]  # the cut-off text is never passed on (" And" was read)
    said = [t async for t in first_sentence(tokens(" open at eight. Then", " more."), "We")]
    assert "".join(said) == "We open at eight."  # a stop inside a token cuts it there
    assert "".join([t async for t in first_sentence(tokens("Hi.", " We open at eight.", " More."), "")]) == (
        "Hi. We open at eight."  # too short to stand alone as the lead-in
    )


async def test_skip_repeat_drops_only_a_restated_opening() -> None:
    async def tokens(*ts: str):
        for t in ts:
            yield t

    async def collect(gen: Any) -> str:
        return "".join([t async for t in gen])

    assert await collect(skip_repeat(tokens(" We", " open", " at eight.", " Until six."), "We open at eight.")) == (
        " Until six."
    )
    assert await collect(skip_repeat(tokens(" We", " close", " at six."), "We open at eight.")) == " We close at six."
    assert await collect(skip_repeat(tokens(" We", " open"), "We open at eight.")) == ""


# -- hybrid -----------------------------------------------------------------------------------------------


class FakeIndex:
    """Stands in for the knowledge index: fixed passages, records the queries."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, int]] = []

    async def aretrieve(self, query: str, top_k: int) -> list[Passage]:
        self.queries.append((query, top_k))
        return [Passage("Main Street opens at 8 am on weekdays.", "hours-main-street.md", 0.8)][:top_k]


@pytest.mark.parametrize("team", [False, True])
async def test_hybrid_puts_passages_in_the_instructions_and_the_trace(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack, team: bool
) -> None:
    index = FakeIndex()
    cfg = HybridStrategy.Config(team=team, coordination="gather", top_k=2)
    hybrid = HybridStrategy(cfg, stack=scripted_stack, index=index)
    assert isinstance(hybrid.inner, MultiAgentStrategy if team else AutoGenStrategy)
    ctx = chat_ctx(("user", "When does Main Street open?"))
    text, _ = await run_turn(hybrid, ctx)
    assert text == ANSWER
    assert index.queries == [("When does Main Street open?", 2)]
    trace = hybrid.trace_for(ctx.items[-1].id)
    assert trace is not None and [p.source for p in trace.contexts] == ["hours-main-street.md"]
    reqs = endpoint.chat_requests
    assert len(reqs) == (2 if team else 1)
    for r in reqs:  # every member reads the passages in its leading instructions, none in a later message
        assert system_text(r).startswith(INSTRUCTIONS) and "Main Street opens at 8 am" in system_text(r)
        assert all("<documents>" not in m["content"] for m in r.messages[1:])
    await hybrid.aclose()


def test_hybrid_config_accepts_the_team_and_retrieval_keys() -> None:
    cfg = HybridStrategy.Config.model_validate({"team": True, "top_k": 4, "coordination": "gather"})
    assert cfg.team and cfg.top_k == 4 and cfg.knowledge is None and cfg.coordination == "gather"
    with pytest.raises(ValueError):
        HybridStrategy.Config.model_validate({"teams": True})


async def test_closing_a_gather_turn_cancels_the_team_run(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    long = " ".join(["word"] * 200) + "."
    endpoint.default = by_role(Script(text="- note", ttft_s=0.01), Script(text="x"), Script(text=long, gap_s=0.02))
    team = build({"kind": "multi_agent", "coordination": "gather"}, scripted_stack)
    async with team.chat(chat_ctx=chat_ctx(("user", "Talk a lot"))) as stream:
        async for _ in stream:
            break  # barge-in while the editor speaks
    closed_at = time.perf_counter()
    researcher, editor = await endpoint.wait_for_requests(2)
    assert researcher.completed
    assert await editor.wait_done(1.0) and editor.disconnected and not editor.completed
    assert editor.disconnected_at is not None and editor.disconnected_at - closed_at < 0.1
    assert not running_tasks("autogen-")
    await team.aclose()


# -- the team coordinator, with scripted members ---------------------------------------------------------


class Members:
    """Scripted team members for :class:`Team`: each reply is a list of tokens; ``log`` records, in order, each
    member's start, the lead-in's acceptance, every token handed out, and each member's stream closing."""

    def __init__(self, replies: dict[str, list[str]], *, hold: dict[str, asyncio.Event] | None = None) -> None:
        self.replies = replies
        self.hold = hold or {}  # a member waits for its event before its first token (after being accepted)
        self.log: list[str] = []
        self.systems: dict[str, list[str]] = {}

    def ask(self, member: str, system: str, max_tokens: int | None) -> AsyncGenerator[str, None]:
        self.systems.setdefault(member, []).append(system)
        key = "continuation" if "already said" in system else "lead" if "Start your reply" in system else member

        async def reply() -> AsyncGenerator[str, None]:
            self.log.append(f"{key} starts")
            try:
                report_accepted()  # the scripted server takes every request at once
                self.log.append(f"{key} accepted")
                if key in self.hold:
                    await self.hold[key].wait()
                for token in self.replies[key]:
                    self.log.append(f"{key}: {token}")
                    yield token
                    await asyncio.sleep(0)
            finally:
                self.log.append(f"{key} closed")

        return reply()


async def speak(team: Team, log: list[str]) -> str:
    """The team's low-latency answer; each chunk is logged as heard when the caller receives it."""
    said = ""
    async for chunk in team.low_latency():
        log.append(f"heard: {chunk}")
        said += chunk
    return said


def team(members: Members, notes: dict[str, Any], ask: Ask | None = None, **keys: Any) -> Team:
    return Team(TeamConfig(**keys), INSTRUCTIONS, ask or members.ask, notes, name="test")


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0)


async def test_team_speaks_the_lead_in_while_the_helper_still_works_then_continues_with_its_notes() -> None:
    helper_may_go = asyncio.Event()
    replies = {
        "lead": ["We open", " at eight.", " And more."],
        "researcher": ["- 8 am", " to 6 pm"],
        "continuation": ["x"],
    }
    members = Members(replies, hold={"researcher": helper_may_go})
    notes: dict[str, Any] = {}
    speaking = asyncio.create_task(speak(team(members, notes), members.log))
    # the helper writes only once the caller has heard the lead-in: a team that waited for it would hang here
    await asyncio.wait_for(_until(lambda: "heard: We open" in members.log), 5)
    helper_may_go.set()
    assert await speaking == "We open at eight. x"
    log = members.log
    assert log.index("lead accepted") < log.index("researcher starts")  # sent once the server took the lead-in
    # the lead-in is cut after its first sentence: the token after it is read, never heard
    assert log.index("heard:  at eight.") < log.index("lead:  And more.") < log.index("lead closed")
    assert "heard:  And more." not in log
    assert log.index("researcher closed") < log.index("continuation starts")  # it waited for the helper's notes
    system = members.systems["editor"][-1]
    assert '"We open at eight."' in system and "researcher: - 8 am to 6 pm" in system
    assert notes["helpers_partial"] is False and "helper_errors" not in notes


async def test_team_starts_no_helper_when_the_lead_in_fails() -> None:
    members = Members({"lead": [], "researcher": ["- note"], "continuation": ["x"]})

    def failing(member: str, system: str, max_tokens: int | None) -> AsyncGenerator[str, None]:
        async def refused() -> AsyncGenerator[str, None]:
            members.log.append(f"{member} starts")
            raise ConnectionError("refused")
            yield ""  # unreachable: makes this an async generator

        return refused() if "Start your reply" in system else members.ask(member, system, max_tokens)

    notes: dict[str, Any] = {}
    with pytest.raises(ConnectionError):
        await speak(team(members, notes, failing), members.log)
    assert members.log == ["editor starts"]  # the turn falls back; no helper work was started for it


async def test_team_uses_partial_notes_when_the_helper_runs_out_of_time() -> None:
    never = asyncio.Event()
    members = Members({"lead": ["We open at eight."], "researcher": ["- Main", " Street"], "continuation": [" Yes."]})

    def slow_helper(member: str, system: str, max_tokens: int | None) -> AsyncGenerator[str, None]:
        if member != "researcher":
            return members.ask(member, system, max_tokens)

        async def stalls() -> AsyncGenerator[str, None]:
            try:
                yield "- Main Street"
                await never.wait()  # the rest never comes
            finally:
                members.log.append("researcher closed")

        return stalls()

    notes: dict[str, Any] = {}
    said = await speak(team(members, notes, slow_helper, helper_wait_s=0.05), members.log)
    assert said == "We open at eight. Yes."
    assert members.log.index("researcher closed") < members.log.index("continuation starts")  # cancelled first
    assert "researcher: - Main Street" in members.systems["editor"][-1]
    assert notes["helpers_partial"] is True and notes["lead_in_s"] <= notes["helpers_s"]


async def test_closing_the_team_closes_every_member_stream() -> None:
    replies = {"lead": ["We open at eight.", " Then", " more."], "researcher": ["- note"], "continuation": ["x"]}
    members = Members(replies, hold={"researcher": asyncio.Event()})  # the helper is still working
    async with contextlib.aclosing(team(members, {}).low_latency()) as answer:
        assert await anext(answer) == "We open at eight."
        await _until(lambda: "researcher accepted" in members.log)
    # the caller barged in: closing returned only once every member that started had been closed
    started = {line.removesuffix(" starts") for line in members.log if line.endswith(" starts")}
    closed = {line.removesuffix(" closed") for line in members.log if line.endswith(" closed")}
    assert started == closed == {"lead", "researcher"} and not running_tasks("test-")


# -- AutoGen's log filter ----------------------------------------------------------------------------------


def test_importing_the_strategies_leaves_logging_filters_unchanged() -> None:
    code = (
        "import json, logging\n"
        "def filters():\n"
        "    names = ['', *logging.Logger.manager.loggerDict]\n"
        "    return {n: len(getattr(logging.getLogger(n), 'filters', [])) for n in names}\n"
        "import ag2, autogen_agentchat.teams, autogen_ext.models.openai, livekit.agents, openai.resources\n"
        "import workbench.models  # the frameworks and models install their own logging first\n"
        "before = filters()\n"
        "import workbench.strategies.agents, workbench.strategies.ag2, workbench.strategies.teams\n"
        "after = filters()\n"
        "print(json.dumps({n: c for n, c in after.items() if c != before.get(n, 0)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


async def test_autogen_strategies_drop_cancelled_run_tracebacks_only_while_open(scripted_stack: ModelStack) -> None:
    logger = logging.getLogger("autogen_core")
    gc.collect()  # strategies other tests left open release it when collected
    before = list(logger.filters)
    try:
        raise asyncio.CancelledError
    except asyncio.CancelledError:
        cancelled = logger.makeRecord("autogen_core", logging.ERROR, __file__, 0, "cancelled", (), sys.exc_info())
    plain_error = logger.makeRecord("autogen_core", logging.ERROR, __file__, 0, "failed", (), None)
    a, b = build("autogen", scripted_stack), build("multi_agent", scripted_stack)
    assert not logger.filter(cancelled) and logger.filter(plain_error)
    await a.aclose()
    await a.aclose()  # closing twice releases once
    assert not logger.filter(cancelled)  # b still holds it
    await b.aclose()
    assert logger.filters == before and logger.filter(cancelled) == (not before)
