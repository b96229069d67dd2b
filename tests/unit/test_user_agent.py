"""Your own agent (``agent:`` in a suite): replayed with the strategy as its session's LLM, promoted, served."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from livekit.agents import llm
from pydantic import ValidationError

from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.faults.speech import FixedDelaySTT
from workbench.pipeline.agents import (
    AgentFactory,
    AgentFactoryError,
    build_user_agent,
    load_agent_factory,
    make_user_agent,
)
from workbench.pipeline.promoted import AgentSpec, PromotedFileError, load_promoted
from workbench.testing.worlds import fake_speech_stack, make_dataset, scripted_stack, voice_dataset
from workbench.workflows import Suite, arun, load_run, load_suite
from workbench.workflows.promote import promote
from workbench.workflows.suite import SuiteError, VoiceOptions

CLINIC_AGENT = '''
from livekit.agents import Agent, function_tool, llm

CALLS = []


@function_tool
async def clinic_hours(day: str) -> str:
    """The clinic's opening hours on a given day.

    Args:
        day: the day of the week
    """
    return "8 am to 6 pm"


class ClinicAgent(Agent):
    def __init__(self, tone: str = "warm", chat_ctx=None) -> None:
        super().__init__(
            instructions=f"You are the clinic's {tone} receptionist.", tools=[clinic_hours], chat_ctx=chat_ctx
        )

    async def llm_node(self, chat_ctx, tools, model_settings):
        CALLS.append(("llm_node", [t.id for t in tools]))
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk

    async def tts_node(self, text, model_settings):
        seen = []

        async def recorded():
            async for t in text:
                seen.append(t)
                yield t

        async for frame in Agent.default.tts_node(self, recorded(), model_settings):
            yield frame
        CALLS.append(("tts_node", "".join(seen)))


def build(tone: str = "warm") -> ClinicAgent:
    return ClinicAgent(tone=tone)


def build_with_history(chat_ctx=None) -> ClinicAgent:
    return ClinicAgent(tone="calm", chat_ctx=chat_ctx)


class _OwnLLM(llm.LLM):
    def chat(self, **kwargs):
        raise NotImplementedError


def with_own_llm() -> Agent:
    return Agent(instructions="x", llm=_OwnLLM())


def not_an_agent() -> str:
    return "hello"


def boom() -> Agent:
    raise RuntimeError("no API key for the CRM")


async def async_build() -> Agent:
    return Agent(instructions="x")


NOT_CALLABLE = 3
'''


@pytest.fixture
def agent_file(tmp_path: Path) -> Path:
    f = tmp_path / "suites" / "agents" / "clinic.py"
    f.parent.mkdir(parents=True)
    f.write_text(textwrap.dedent(CLINIC_AGENT))
    return f


def _calls(agent_file: Path) -> list[tuple[str, Any]]:
    return load_agent_factory(f"{agent_file}:build").__globals__["CALLS"]


def _suite_file(tmp_path: Path, ds: Path, agent: Any, **extra: Any) -> Path:
    f = tmp_path / "suites" / "clinic.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(yaml.safe_dump({"name": "clinic", "dataset": str(ds), "agent": agent, **extra}))
    return f


# -- the spec ---------------------------------------------------------------------------------------
def test_the_spec_reads_and_writes_back_as_written() -> None:
    assert AgentFactory.model_validate("my_agent:build").model_dump() == "my_agent:build"
    f = AgentFactory.model_validate({"use": "a/b.py:build", "tone": "formal"})
    assert (f.target, f.attr, f.is_file, f.args) == ("a/b.py", "build", True, {"tone": "formal"})
    assert f.model_dump(mode="json") == {"use": "a/b.py:build", "tone": "formal"}
    assert not AgentFactory.model_validate("pkg.mod:Cls.create").is_file
    nested = AgentFactory(use="m:f", args={"args": [1]})  # a keyword argument named "args" round-trips
    assert AgentFactory.model_validate(nested.model_dump()) == nested
    for bad in ("no_colon", "mod:", {"tone": "formal"}):
        with pytest.raises(ValidationError):
            AgentFactory.model_validate(bad)


def test_instructions_and_agent_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="`instructions` and `agent` together"):
        Suite(agent="m:f", instructions="Be brief.")
    with pytest.raises(ValidationError, match="not both"):
        AgentSpec(factory="m:f", instructions="Be brief.")


# -- a text run ---------------------------------------------------------------------------------------
async def test_text_run_replays_the_users_agent_with_the_strategy_as_its_llm(tmp_path: Path, agent_file: Path) -> None:
    ds = make_dataset(tmp_path / "ds", conversations=1, turns=2)
    suite_path = _suite_file(tmp_path, ds, {"use": "agents/clinic.py:build", "tone": "formal"})
    suite = load_suite(suite_path)  # the file path is relative to the suite file
    assert suite.agent is not None and Path(suite.agent.target).resolve() == agent_file.resolve()
    async with ScriptedEndpoint() as ep:
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=scripted_stack(ep, tmp_path), progress=False)
        requests = [r for r in ep.chat_requests if r.user_text.startswith("question")]
    df = load_run(res.path).sort_values("turn_index")
    assert df["error_kind"].isna().all(), df[["error_kind", "error"]]
    assert df["answer"].tolist() == ["You said: question 0.0", "You said: question 0.1"]
    assert len(requests) == 2
    for r in requests:
        assert r.messages[0]["role"] == "system"
        assert r.messages[0]["content"] == "You are the clinic's formal receptionist."  # the agent's, not ours
        tools = [t["function"]["name"] for t in r.body.get("tools") or []]
        assert tools == ["clinic_hours"], r.body.get("tools")
        schema = r.body["tools"][0]["function"]
        assert "opening hours" in schema["description"] and "day" in schema["parameters"]["properties"]
    assert _calls(agent_file).count(("llm_node", ["clinic_hours"])) == 2  # the override ran for each turn
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["suite"]["agent"] == {"use": f"{suite.agent.target}:build", "tone": "formal"}


async def test_history_reaches_the_agent_either_way(agent_file: Path) -> None:
    history = llm.ChatContext()
    history.add_message(role="user", content="question 0")
    history.add_message(role="assistant", content="answer 0")
    for name in ("build", "build_with_history"):  # added after construction / passed as chat_ctx=
        agent = await build_user_agent(f"{agent_file}:{name}", chat_ctx=history)
        texts = [i.text_content for i in agent.chat_ctx.items if isinstance(i, llm.ChatMessage)]
        assert texts == ["question 0", "answer 0"], name
        assert [t.id for t in agent.tools] == ["clinic_hours"]


# -- a voice run: the speech-text clean-up still applies -------------------------------------------------
async def test_voice_run_cleans_the_text_going_into_the_agents_own_tts_node(tmp_path: Path, agent_file: Path) -> None:
    ds = voice_dataset(tmp_path / "ds", turns=1)
    stt = FixedDelaySTT(delay_s=0.01, texts=["question 0"])
    suite = Suite(
        dataset=ds,
        mode="voice",
        voice=VoiceOptions(variants=["piper"], realtime=False),
        agent=f"{agent_file}:build",
    )
    with ScriptedEndpoint(Script(text="Please see **Dr.** Lee at DianaChat.")) as ep:
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path)
    assert len(df) == 1 and df["error_kind"].isna().all(), df[["error_kind", "error"]]
    spoken = [text for kind, text in _calls(agent_file) if kind == "tts_node"]
    # the session's transforms ran before the agent's own tts_node: markdown off, words made speakable
    assert spoken and " ".join(spoken[-1].split()) == "Please see Doctor Lee at Diana Chat."
    assert "Dr." in df["answer"].iloc[0]  # the transcript (the chat history) keeps the model's own words


# -- bad factories ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("use", "message"),
    [
        ("no_such_module_for_agents:build", "no module named 'no_such_module_for_agents'"),
        ("agents/missing.py:build", "no file"),
        ("agents/clinic.py:nope", "has no 'nope'"),
        ("agents/clinic.py:NOT_CALLABLE", "is a int, not a callable"),
    ],
)
def test_a_factory_that_cannot_be_loaded_fails_when_the_suite_loads(
    tmp_path: Path, agent_file: Path, use: str, message: str
) -> None:
    suite_path = _suite_file(tmp_path, tmp_path / "ds", use)
    with pytest.raises(SuiteError, match=r"clinic\.yaml: agent: .*" + message):
        load_suite(suite_path)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not_an_agent", "returned a str, not a livekit.agents.Agent"),
        ("boom", "raised RuntimeError: no API key for the CRM"),
        ("with_own_llm", "own llm="),
        ("async_build", "returned an awaitable"),
    ],
)
async def test_a_factory_that_fails_when_called_fails_before_the_run_starts(
    tmp_path: Path, agent_file: Path, name: str, message: str
) -> None:
    ds = make_dataset(tmp_path / "ds", conversations=1, turns=1)
    suite = load_suite(_suite_file(tmp_path, ds, f"agents/clinic.py:{name}"))
    async with ScriptedEndpoint() as ep:
        with pytest.raises(SuiteError, match=f"^agent: .*{name}.*{message}"):
            await arun(suite, runs_dir=tmp_path / "runs", stack=scripted_stack(ep, tmp_path), progress=False)
        assert not ep.chat_requests  # no turn ran
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder


# -- promote and the worker -------------------------------------------------------------------------------
async def test_promote_records_the_factory_and_the_worker_builds_the_same_agent(
    tmp_path: Path, agent_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.worker import session_from_promoted

    monkeypatch.chdir(tmp_path)  # the repo: the promoted file names the agent file relative to it
    ds = make_dataset(tmp_path / "ds", conversations=1, turns=1)
    suite_path = _suite_file(
        tmp_path,
        ds,
        {"use": "agents/clinic.py:build", "tone": "formal"},
        gates=[{"metric": "error_rate", "max": 0.5}],
        speech_text={"replacements": {"a.m.": "A M"}},
    )
    async with ScriptedEndpoint() as ep:
        stack = scripted_stack(ep, tmp_path)
        res = await arun(load_suite(suite_path), runs_dir=tmp_path / "runs", stack=stack, progress=False)
        out = tmp_path / "worker" / "promoted.yaml"
        promote(res.run_id, "plain", runs_dir=tmp_path / "runs", out=out)
        p = load_promoted(out)
        assert p.agent.factory is not None and p.agent.instructions is None
        assert p.agent.factory.model_dump() == {"use": "suites/agents/clinic.py:build", "tone": "formal"}
        assert "suites/agents/clinic.py:build" in out.read_text()  # portable: relative to the repo
        assert p.agent.speech_text is not None and p.agent.speech_text["replacements"] == {"a.m.": "A M"}

        session, agent = session_from_promoted(out, stack, mode="text")
        try:
            assert type(agent).__name__ == "ClinicAgent"
            assert type(agent) is type(make_user_agent(f"{agent_file}:build"))  # the same class: loaded once
            assert agent.instructions == "You are the clinic's formal receptionist."
            assert [t.id for t in agent.tools] == ["clinic_hours"]
            assert session.options.tts_text_transforms  # the promoted speech-text clean-up, on the session
        finally:
            await session.aclose()
            await session.llm.aclose()  # type: ignore[union-attr]


def test_the_worker_names_a_bad_factory(tmp_path: Path) -> None:
    from workbench.pipeline.promoted import Promoted
    from workbench.worker import session_from_promoted

    promoted = Promoted(strategy={"kind": "plain"}, agent=AgentSpec(factory=f"{tmp_path}/gone.py:build"))
    with pytest.raises(PromotedFileError, match=r"^agent\.factory: .*no file"):
        session_from_promoted(promoted, None)  # type: ignore[arg-type]  (fails before any model is touched)


def test_errors_are_agent_factory_errors(agent_file: Path) -> None:
    with pytest.raises(AgentFactoryError, match=r"not a livekit\.agents\.Agent"):
        make_user_agent(f"{agent_file}:not_an_agent")
