"""AG2 strategies against the scripted OpenAI-compatible endpoint: streaming, faults, cancellation, coordination."""

from __future__ import annotations

import time

import pytest
from ag2.events import ModelRequest, ModelResponse
from agent_cases import (
    ANSWER,
    INSTRUCTIONS,
    LEAD,
    MORE,
    NOTES,
    PLAN,
    by_role,
    chat_ctx,
    request_for,
    run_turn,
    running_tasks,
    system_text,
)

from workbench.core.config import EndpointConfig
from workbench.faults.endpoint import FAULTS, Script, ScriptedEndpoint
from workbench.models import ModelStack, ResolvedEndpoint
from workbench.strategies.ag2 import AG2Clients, AG2Strategy, AG2TeamStrategy, create_options, to_ag2
from workbench.strategies.registry import available, build
from workbench.workflows.faults import EXPECTED_KIND, PARTIAL_FAULTS

pytestmark = pytest.mark.usefixtures("_warm_tokenizer")

QUICK = {"first_chunk_timeout_s": 0.3, "chunk_timeout_s": 0.3}  # hang and trickle fall back quickly


def no_ag2_tasks() -> list[str]:
    return running_tasks("ag2-")


# -- conversion, registry, clients ---------------------------------------------------------------------------


def test_chat_context_becomes_instructions_history_and_the_request() -> None:
    ctx = chat_ctx(("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", "When do you open?"))
    ctx.add_message(role="system", content="The caller is a patient.")  # a late system message
    conv = to_ag2(ctx)
    assert conv.instructions == f"{INSTRUCTIONS}\n\nThe caller is a patient."
    assert [type(e) for e in conv.history] == [ModelRequest, ModelResponse]
    assert isinstance(conv.history[1], ModelResponse) and conv.history[1].content == "Hello, how can I help?"
    assert [p.content for p in conv.request.parts] == ["When do you open?"]  # type: ignore[attr-defined]
    greeting = to_ag2(chat_ctx())  # instructions alone: AG2 still needs a request to start its turn
    assert greeting.history == [] and [p.content for p in greeting.request.parts] == [""]  # type: ignore[attr-defined]


def test_registered_kinds_build_from_config(scripted_stack: ModelStack) -> None:
    kinds = available()
    assert {"ag2", "ag2_team"} <= set(kinds)
    assert isinstance(build("ag2", scripted_stack), AG2Strategy)
    s = build({"kind": "ag2_team", "coordination": "gather", "helpers": ["researcher", "planner"]}, scripted_stack)
    assert isinstance(s, AG2TeamStrategy) and s.config.coordination == "gather" and list(s.helpers) == s.config.helpers
    with pytest.raises(ValueError, match="coordination"):
        build({"kind": "ag2_team", "coordination": "fastest"}, scripted_stack)
    with pytest.raises(ValueError, match="helpers"):
        build({"kind": "ag2_team", "helpers": []}, scripted_stack)


async def test_clients_share_the_stacks_pool_per_endpoint_and_loop(scripted_stack: ModelStack) -> None:
    a, b = build("ag2", scripted_stack), build("ag2_team", scripted_stack)
    assert isinstance(a, AG2Strategy) and isinstance(b, AG2Strategy)
    assert a.clients is b.clients
    assert a.clients.get() is b.clients.get() and a.clients.get(16) is not a.clients.get()
    pool = scripted_stack.http_client(scripted_stack.endpoint())  # plain's pool: no second AsyncOpenAI
    assert a.clients.get().create() is a.clients.get().client and a.clients.get().client._client is pool


def test_local_endpoints_get_max_tokens_in_the_body() -> None:
    local = ResolvedEndpoint("default", EndpointConfig(kind="local", max_tokens=40), "http://127.0.0.1:1/v1", "m")
    assert create_options(local, 24)["max_tokens"] == 24  # llama.cpp ignores max_completion_tokens
    remote = ResolvedEndpoint("r", EndpointConfig(kind="openai", base_url="http://x/v1", model="m"), "http://x/v1", "m")
    assert "max_tokens" not in create_options(remote, 24) and create_options(remote, 24)["max_completion_tokens"] == 24


# -- the single agent -----------------------------------------------------------------------------------------


async def test_ag2_streams_tokens_as_produced_and_sends_plains_request(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = Script(text=ANSWER, ttft_s=0.02, gap_s=0.03)
    ctx = chat_ctx(("user", "Hi"), ("assistant", "Hello."), ("user", "When do you open?"))
    plain, agent = build("plain", scripted_stack), build("ag2", scripted_stack)
    await run_turn(plain, ctx)
    text, chunks = await run_turn(agent, ctx)
    plain_req, agent_req = endpoint.chat_requests
    assert text == ANSWER == "".join(agent_req.tokens_sent)
    assert len(chunks) == len(agent_req.tokens_sent) > 5
    assert chunks[0][0] < agent_req.token_times[1], "the first token must be passed on before the next one is sent"
    assert agent_req.body == plain_req.body  # same prompt and parameters: same cache hits on a real server
    trace = agent.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind is None and trace.first_chunk_s is not None
    await agent.aclose()
    await plain.aclose()


async def test_ag2_keeps_no_memory_between_turns(endpoint: ScriptedEndpoint, scripted_stack: ModelStack) -> None:
    agent = build("ag2", scripted_stack)
    await run_turn(agent, chat_ctx(("user", "First question")))
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


async def test_closing_the_stream_cancels_the_run_and_the_http_request(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = Script(text=" ".join(["word"] * 200), ttft_s=0.01, gap_s=0.02)
    agent = build("ag2", scripted_stack)
    async with agent.chat(chat_ctx=chat_ctx(("user", "Talk a lot"))) as stream:
        async for _ in stream:
            break  # the caller barges in after the first chunk
    closed_at = time.perf_counter()
    (req,) = endpoint.chat_requests
    assert await req.wait_done(1.0)
    assert req.disconnected and not req.completed
    assert req.disconnected_at is not None and req.disconnected_at - closed_at < 0.1
    assert len(req.tokens_sent) < 20
    assert not no_ag2_tasks(), "the AG2 run survived"
    await agent.aclose()


# -- faults: every scripted fault falls back, or apologises -------------------------------------------------

SPECS = {
    "ag2": {"kind": "ag2"},
    "team-low_latency": {"kind": "ag2_team", "coordination": "low_latency"},
    "team-gather": {"kind": "ag2_team", "coordination": "gather"},
}


def inject(endpoint: ScriptedEndpoint, spec: str, fault: str) -> None:
    """The fault on the request that speaks: the agent's, the lead-in's, or the gather editor's."""
    script = Script(text="One two three four five six.", fault=fault, after=2, trickle_gap_s=1.0)  # type: ignore[arg-type]
    if spec == "ag2":
        endpoint.push(script)
    elif spec == "team-low_latency":
        endpoint.default = by_role(Script(text=NOTES), script, Script(text=MORE))
    else:
        endpoint.default = by_role(Script(text=NOTES), Script(text=LEAD), Script(text=MORE), editor=script)


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "apology"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("spec", list(SPECS))
async def test_every_fault_falls_back_or_apologises(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack, spec: str, fault: str, fallback: bool
) -> None:
    inject(endpoint, spec, fault)
    strategy = build({**SPECS[spec], **QUICK, **({"fallback": "plain"} if fallback else {})}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, _ = await run_turn(strategy, ctx)
    trace = strategy.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind == EXPECTED_KIND[fault], trace
    assert trace.partial == (fault in PARTIAL_FAULTS)
    assert trace.fallback == ("plain" if fallback else "apology")
    recovery = ANSWER if fallback else str(strategy.options.apology)
    if trace.partial:  # the caller heard the first words, then the recovery, kept apart by a space
        assert text.startswith("One") and text.endswith(" " + recovery) and text.count(recovery) == 1
    else:
        assert text == recovery
    for r in endpoint.chat_requests:  # nothing is left running upstream
        assert await r.wait_done(1.0)
    assert not no_ag2_tasks()
    await strategy.aclose()


# -- the team --------------------------------------------------------------------------------------------------


async def test_gather_speaks_only_after_every_helper_is_done_and_reads_their_notes(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = by_role(
        Script(text=NOTES, ttft_s=0.03, gap_s=0.01),
        Script(text="unused"),
        Script(text="unused"),
        editor=Script(text=MORE, gap_s=0.01),
    )
    team = build({"kind": "ag2_team", "coordination": "gather", "helpers": ["researcher", "planner"]}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, chunks = await run_turn(team, ctx)
    assert text == MORE  # only the editor is spoken
    researcher, planner = request_for(endpoint, "the researcher"), request_for(endpoint, "the planner")
    editor = request_for(endpoint, "colleagues' notes")
    for helper in (researcher, planner):  # every helper had finished its answer before the editor was asked
        assert helper.completed and helper.finished_at is not None
        assert helper.token_times[-1] <= editor.arrived <= editor.token_times[0] <= chunks[0][0]
    # the editor reads the caller's question once, then each helper's notes
    assert [m["content"] for m in editor.messages[1:]] == ["When do you open?", NOTES, PLAN]
    assert [m["content"] for m in researcher.messages[1:]] == ["When do you open?"]
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.notes["coordination"] == "gather" and trace.error_kind is None
    await team.aclose()


async def test_low_latency_speaks_while_the_helper_is_still_working(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    # the researcher never answers on its own: its request ends only when the team cancels it
    endpoint.default = by_role(Script(fault="hang"), Script(text=LEAD), Script(text=MORE))
    team = build({"kind": "ag2_team", "coordination": "low_latency", "helper_wait_s": 0.2}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, chunks = await run_turn(team, ctx)
    assert text == f"{LEAD} {MORE}"
    researcher, final = request_for(endpoint, "the researcher"), request_for(endpoint, "already said")
    assert await researcher.wait_done(1.0) and researcher.disconnected  # cancelled once helper_wait_s ran out
    assert researcher.disconnected_at is not None
    assert chunks[0][0] < researcher.disconnected_at <= final.arrived  # spoke first; continued without it
    assert "- none" in system_text(final)
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.notes["helpers_partial"] is True and trace.error_kind is None
    assert trace.notes["lead_in_s"] <= trace.notes["helpers_s"]
    await team.aclose()


async def test_low_latency_sends_helpers_once_the_lead_in_is_queued_then_uses_their_notes(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = by_role(Script(text=NOTES), Script(text=LEAD, ttft_s=0.1), Script(text=MORE))
    team = build("ag2_team", scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, chunks = await run_turn(team, ctx)
    lead, final = request_for(endpoint, "Start your reply now"), request_for(endpoint, "already said")
    researcher = request_for(endpoint, "the researcher")
    assert lead.arrived <= researcher.arrived  # the lead-in is sent first (a one-slot server serves it first)
    # released by the lead-in's response headers, not by its first token
    assert researcher.arrived < lead.token_times[0] <= chunks[0][0]
    assert final.arrived >= researcher.token_times[-1]
    assert f'"{LEAD}"' in system_text(final) and NOTES in system_text(final)
    assert text == f"{LEAD} {MORE}"
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.notes["helpers_partial"] is False
    await team.aclose()


async def test_low_latency_cuts_the_lead_in_at_its_first_sentence_and_skips_a_restart(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    endpoint.default = by_role(
        Script(text=NOTES), Script(text=f"{LEAD} And then more words follow here."), Script(text=f" {LEAD} {MORE}")
    )  # a small model restarts
    team = build("ag2_team", scripted_stack)
    text, _ = await run_turn(team, chat_ctx(("user", "When do you open?")))
    assert text == f"{LEAD} {MORE}"
    await team.aclose()


@pytest.mark.parametrize("coordination", ["gather", "low_latency"])
async def test_a_failed_helper_is_recorded_and_the_answer_goes_on(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack, coordination: str
) -> None:
    endpoint.default = by_role(Script(fault="http_500"), Script(text=LEAD), Script(text=MORE))
    team = build({"kind": "ag2_team", "coordination": coordination}, scripted_stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, _ = await run_turn(team, ctx)
    assert text == (MORE if coordination == "gather" else f"{LEAD} {MORE}")
    trace = team.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind is None and trace.notes["helper_errors"] == {"researcher": "http_500"}
    await team.aclose()


async def test_closing_a_low_latency_turn_cancels_every_member(
    endpoint: ScriptedEndpoint, scripted_stack: ModelStack
) -> None:
    long = " ".join(["word"] * 200) + "."
    # the lead-in's TTFT leaves the helper's request time to arrive before the caller barges in
    endpoint.default = by_role(
        Script(text=long, gap_s=0.02), Script(text=long, ttft_s=0.1, gap_s=0.02), Script(text="x")
    )
    team = build("ag2_team", scripted_stack)
    async with team.chat(chat_ctx=chat_ctx(("user", "Talk a lot"))) as stream:
        async for _ in stream:
            break
    closed_at = time.perf_counter()
    reqs = await endpoint.wait_for_requests(2)
    for r in reqs:
        assert await r.wait_done(1.0) and r.disconnected and not r.completed
        assert r.disconnected_at is not None and r.disconnected_at - closed_at < 0.1
    assert len(endpoint.chat_requests) == 2  # the continuation was never started
    assert not no_ag2_tasks()
    await team.aclose()


async def test_closing_a_gather_turn_cancels_the_editor(endpoint: ScriptedEndpoint, scripted_stack: ModelStack) -> None:
    long = " ".join(["word"] * 200) + "."
    endpoint.default = by_role(
        Script(text="- note"), Script(text="x"), Script(text="x"), editor=Script(text=long, gap_s=0.02)
    )
    team = build({"kind": "ag2_team", "coordination": "gather"}, scripted_stack)
    async with team.chat(chat_ctx=chat_ctx(("user", "Talk a lot"))) as stream:
        async for _ in stream:
            break  # barge-in while the editor speaks
    closed_at = time.perf_counter()
    researcher, editor = await endpoint.wait_for_requests(2)
    assert researcher.completed
    assert await editor.wait_done(1.0) and editor.disconnected and not editor.completed
    assert editor.disconnected_at is not None and editor.disconnected_at - closed_at < 0.1
    assert not no_ag2_tasks()
    await team.aclose()


async def test_strategies_release_their_clients_on_close(scripted_stack: ModelStack) -> None:
    clients = AG2Clients.for_stack(scripted_stack, scripted_stack.endpoint())
    agent = build("ag2", scripted_stack)
    assert isinstance(agent, AG2Strategy) and agent.clients is clients
    before = clients.get()
    await agent.aclose()
    assert clients.get() is not before  # rebuilt on the stack's (still open) pool
