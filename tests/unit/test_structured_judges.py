"""Structured judge output under the ``jiter>=0.16`` override (instructor 1.17 declares ``jiter<0.15``).

ragas' LLM metrics get their judgments through instructor (JSON mode, parsed by pydantic; streamed
partial objects parsed by jiter); LiveKit's judges get theirs as a ``submit_verdict`` tool call.
Each test scripts the judge's reply on the scripted OpenAI-compatible endpoint (real HTTP over
httpx2 on 127.0.0.1, no model) and asserts the scores that reply implies, so a parsing break shows
up as a wrong value, a NaN or a missing judgment, not as a silently skipped check.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.core.store import typed_frame
from workbench.faults.endpoint import Script, ScriptedEndpoint, ToolCall
from workbench.scoring import score_run
from workbench.scoring.judge import JudgeLLM

os.environ["RAGAS_DO_NOT_TRACK"] = "true"  # before any test imports ragas (none of the imports above does)

HOURS = "Main Street hours: Monday to Friday 8 am to 6 pm."
PARKING = "Main Street parking: a free lot with 40 spaces behind the building."
LAKESIDE = "Lakeside parking: the Harbor Plaza garage, the first 90 minutes are free."


def turn(user: str, answer: str, **kw: Any) -> dict[str, Any]:
    row = {
        "run_id": "r",
        "strategy": "rag",
        "mode": "text",
        "voice": "",
        "conversation_id": "c001",
        "turn_index": 0,
        "repetition": 0,
        "user_text": user,
        "reference": "",
        "reference_contexts": [],
        "facts": [],
        "answer": answer,
        "contexts": [],
        "context_sources": [],
        "context_scores": [],
    }
    row.update(kw)
    return row


class BagOfWordsEmbedder:
    """Deterministic stand-in for MiniLM (no torch in unit tests): identical texts -> cosine 1."""

    name = "bag-of-words"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 128), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace("?", " ").split():
                out[i, sum(map(ord, w)) % 128] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class TinyStack:
    def embedder(self) -> BagOfWordsEmbedder:
        return BagOfWordsEmbedder()

    def close(self) -> None:
        pass


def cosine(a: str, b: str) -> float:
    va, vb = BagOfWordsEmbedder().embed([a, b])
    return float(va @ vb)


def content(msg: dict[str, Any]) -> str:
    c = msg.get("content")
    return c if isinstance(c, str) else json.dumps(c)


# -- jiter: the calls instructor and openai make -----------------------------------------------------


def test_jiter_parses_partial_json_the_ways_instructor_and_openai_ask_for() -> None:
    from jiter import from_json

    cut = b'{"statements": [{"statement": "We open at 8 am", "verdict": 1}, {"statement": "Parking is fr'
    with pytest.raises(ValueError):  # strict: instructor's is_json_complete() relies on this raising
        from_json(cut)
    # instructor's Partial[...] streaming: the unfinished string is kept
    assert from_json(cut, partial_mode="trailing-strings") == {
        "statements": [{"statement": "We open at 8 am", "verdict": 1}, {"statement": "Parking is fr"}]
    }
    # openai's .stream(response_format=...): the unfinished string is dropped
    assert from_json(cut, partial_mode=True) == {"statements": [{"statement": "We open at 8 am", "verdict": 1}, {}]}
    whole = cut + b'ee."}]}'
    assert from_json(whole) == json.loads(whole)

    from instructor.dsl.json_tracker import is_json_complete

    assert not is_json_complete(cut.decode()) and is_json_complete(whole.decode())


# -- instructor: streamed partial objects and re-asks, through the judge's caching httpx2 client ------


async def test_instructor_partial_stream_yields_growing_objects_and_replays_from_the_cache(tmp_path: Path) -> None:
    import instructor
    from ragas.metrics.collections.faithfulness.util import NLIStatementOutput

    pieces = [
        '{"statements": [{"statement": "We open at 8',
        ' am", "reason": "the passage',
        ' says so", "verdict": 1}',
        ', {"statement": "Parking is free", ',
        '"reason": "not in the passage", "verdict": 0}]}',
    ]
    expected = [
        [("We open at 8", None, None)],  # trailing-strings: the unfinished string is already there
        [("We open at 8 am", "the passage", None)],
        [("We open at 8 am", "the passage says so", 1)],
        [("We open at 8 am", "the passage says so", 1), ("Parking is free", None, None)],
        [("We open at 8 am", "the passage says so", 1), ("Parking is free", "not in the passage", 0)],
    ]

    async def run(judge: JudgeLLM) -> list[Any]:
        client = judge.client()
        try:
            ic = instructor.from_openai(client, mode=instructor.Mode.JSON)
            msgs = [{"role": "user", "content": "Judge these statements."}]
            return [
                p
                async for p in ic.chat.completions.create_partial(
                    model="judge-model", response_model=NLIStatementOutput, messages=msgs
                )
            ]
        finally:
            await client.close()

    def triples(p: Any) -> list[tuple[Any, Any, Any]]:
        return [(s.statement, s.reason, s.verdict) for s in p.statements or []]

    async with ScriptedEndpoint(Script(tokens=pieces)) as ep:
        first = await run(JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache"))
        again_judge = JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache")
        again = await run(again_judge)
        assert len(ep.chat_requests) == 1  # the second stream came from the disk cache
        body = ep.chat_requests[0].body
    assert body["stream"] is True and body["response_format"] == {"type": "json_object"}
    assert [triples(p) for p in first] == expected
    assert [triples(p) for p in again] == expected
    assert again_judge.cache.hits == 1
    final = NLIStatementOutput.model_validate(first[-1].model_dump())  # the last snapshot is the whole object
    assert [s.verdict for s in final.statements] == [1, 0]


async def test_openai_structured_stream_parses_partial_json(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Hours(BaseModel):
        day: str
        opens: str
        closes: str

    pieces = ['{"day": "Mon', 'day", "opens": "8 am", ', '"closes": "6', ' pm"}']
    async with ScriptedEndpoint(Script(tokens=pieces)) as ep:
        client = JudgeLLM(base_url=ep.base_url, model="m", cache_dir=tmp_path / "cache").client()
        try:
            snapshots = []
            async with client.chat.completions.stream(
                model="m", messages=[{"role": "user", "content": "hours?"}], response_format=Hours
            ) as stream:
                async for event in stream:
                    if event.type == "content.delta":
                        snapshots.append(event.parsed)
                final = await stream.get_final_completion()
        finally:
            await client.close()
    assert not snapshots[0]  # '{"day": "Mon' -> {} : partial_mode=True drops an unfinished string
    assert snapshots[1:] == [
        {"day": "Monday", "opens": "8 am"},
        {"day": "Monday", "opens": "8 am"},
        {"day": "Monday", "opens": "8 am", "closes": "6 pm"},
    ]
    assert final.choices[0].message.parsed == Hours(day="Monday", opens="8 am", closes="6 pm")


async def test_instructor_reasks_after_a_reply_that_does_not_validate(tmp_path: Path) -> None:
    from ragas.llms.base import llm_factory
    from ragas.metrics.collections import Faithfulness

    from workbench.scoring.offline import ragas_metrics

    ragas_metrics()
    bad = '{"statements": "We open at 8 am."}'  # a string where the schema wants a list
    async with ScriptedEndpoint() as ep:
        ep.push(
            Script(text=bad),
            Script(text=json.dumps({"statements": ["We open at 8 am.", "We close at 6 pm."]})),
            Script(
                text=json.dumps(
                    {
                        "statements": [
                            {"statement": "We open at 8 am.", "reason": "r", "verdict": 1},
                            {"statement": "We close at 6 pm.", "reason": "r", "verdict": 0},
                        ]
                    }
                )
            ),
        )
        client = JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache").client()
        try:
            llm = llm_factory("judge-model", client=client, temperature=0.0, max_tokens=512)
            result = await Faithfulness(llm=llm).ascore(
                user_input="When do you open on Monday?",
                response="We open at 8 am and close at 6 pm.",
                retrieved_contexts=["Monday: 8 am opening."],
            )
        finally:
            await client.close()
        reqs = ep.chat_requests
    assert result.value == pytest.approx(0.5)  # 1 of the 2 scripted statements supported
    assert len(reqs) == 3
    reask = reqs[1].messages
    assert reask[-2] == {"role": "assistant", "content": bad}
    assert "Correct your JSON" in content(reask[-1]) and "valid array" in content(reask[-1])


# -- ragas LLM metrics through the workbench scorer ---------------------------------------------------

Q_HOURS = "What are your hours on Monday at Main Street?"
A_HOURS = "On Mondays we open at 8 am and close at 6 pm, and the garage is free."
Q_LAKE = "Where can I park at Lakeside?"
A_LAKE = "I am not sure, maybe on the street or in a garage nearby."
Q_WALKIN = "Do you take walk-ins at Main Street?"
A_WALKIN = "Yes, walk-ins are welcome at Main Street during opening hours."
QUESTION_FOR_WALKIN = "Are walk-ins welcome at Main Street?"

# what the scripted judge answers, per answer / statement / (question, passage) ...
STATEMENTS = {
    A_HOURS: ["Main Street opens at 8 am on Mondays.", "Main Street closes at 6 pm on Mondays.", "The garage is free."],
    A_LAKE: [
        "Street parking may be available.",
        "A garage is nearby.",
        "The garage may be free.",
        "The garage may not be free.",
    ],
}
SUPPORTED = {
    "Main Street opens at 8 am on Mondays.": 1,
    "Main Street closes at 6 pm on Mondays.": 1,
    "The garage is free.": 0,
    "Street parking may be available.": 0,
    "A garage is nearby.": 1,
    "The garage may be free.": 0,
    "The garage may not be free.": 0,
}
GENERATED_QUESTION = {
    A_HOURS: (Q_HOURS, 0),
    A_LAKE: ("Is there parking near Lakeside?", 1),
    A_WALKIN: (QUESTION_FOR_WALKIN, 0),
}
USEFUL = {(Q_HOURS, PARKING): 0, (Q_HOURS, HOURS): 1, (Q_LAKE, LAKESIDE): 1, (Q_LAKE, HOURS): 0, (Q_LAKE, PARKING): 1}
# ... and the scores that implies
EXPECTED_RAGAS = {
    "faithfulness": [2 / 3, 1 / 4, math.nan],  # supported / statements; no passages: not applicable
    "answer_relevancy": [1.0, 0.0, cosine(Q_WALKIN, QUESTION_FOR_WALKIN)],  # noncommittal=1 -> 0
    "llm_context_precision": [0.5, (1 + 2 / 3) / 2, math.nan],  # average precision over [0,1] and [1,0,1]
}


def ragas_rows() -> pd.DataFrame:
    return typed_frame(
        [
            turn(
                Q_HOURS,
                A_HOURS,
                contexts=[PARKING, HOURS],
                context_sources=["k/p.md", "k/h.md"],
                reference="Main Street is open from 8 am to 6 pm on Mondays.",
            ),
            turn(
                Q_LAKE,
                A_LAKE,
                conversation_id="c002",
                contexts=[LAKESIDE, HOURS, PARKING],
                context_sources=["k/l.md", "k/h.md", "k/p.md"],
                reference="Park in the Harbor Plaza garage; the first 90 minutes are free.",
            ),
            turn(Q_WALKIN, A_WALKIN, conversation_id="c003", strategy="plain"),
        ]
    )


class RagasJudge:
    """Answers each ragas prompt with the JSON its response model wants, from the tables above."""

    def __init__(self) -> None:
        self.unexpected: list[str] = []
        self.kinds: list[str] = []

    def __call__(self, body: dict[str, Any]) -> Script:
        try:
            return self.answer(body)
        except Exception as e:  # recorded and asserted on: a 500 would only show up as a NaN
            self.unexpected.append(f"{type(e).__name__}: {e}")
            return Script(text="unexpected request")

    def answer(self, body: dict[str, Any]) -> Script:
        # the first user message is the ragas prompt (an instructor re-ask appends the reply and the errors)
        system, user = body["messages"][0], next(m for m in body["messages"] if m["role"] == "user")
        assert system["role"] == "system" and body["response_format"] == {"type": "json_object"}  # instructor JSON
        kind = next(
            k
            for k in (
                "StatementGeneratorOutput",
                "NLIStatementOutput",
                "AnswerRelevanceOutput",
                "ContextPrecisionOutput",
            )
            if f'"title": "{k}"' in content(system)
        )
        self.kinds.append(kind)
        data = json.loads(content(user).rsplit("\ninput: ", 1)[1].rsplit("\nOutput:", 1)[0])
        if kind == "StatementGeneratorOutput":
            return Script(text=json.dumps({"statements": STATEMENTS[data["answer"]]}))
        if kind == "NLIStatementOutput":
            verdicts = [{"statement": s, "reason": "scripted", "verdict": SUPPORTED[s]} for s in data["statements"]]
            return Script(text=json.dumps({"statements": verdicts}))
        if kind == "AnswerRelevanceOutput":
            question, noncommittal = GENERATED_QUESTION[data["response"]]
            return Script(text=json.dumps({"question": question, "noncommittal": noncommittal}))
        return Script(text=json.dumps({"reason": "scripted", "verdict": USEFUL[data["question"], data["context"]]}))


def test_ragas_judge_scorer_scores_are_the_ones_the_scripted_json_implies(tmp_path: Path, network_guard: Any) -> None:
    df = ragas_rows()
    judge_fn = RagasJudge()
    with ScriptedEndpoint(default=judge_fn) as ep:
        judge = JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache")
        out = score_run(df, ["ragas_llm"], judge=judge, stack=TinyStack())
        n_calls = len(ep.chat_requests)
    assert judge_fn.unexpected == []
    outcome = out.attrs["scoring"]["scorers"][0]
    assert outcome["status"] == "ok" and outcome["reason"] is None, outcome  # no row failed to parse
    for col, want in EXPECTED_RAGAS.items():
        np.testing.assert_allclose(out[col].to_numpy(), want, rtol=1e-6, atol=1e-6, err_msg=col)
    assert 0.2 < EXPECTED_RAGAS["answer_relevancy"][2] < 0.95  # the scripted question's own words matter
    # faithfulness 2 steps x 2 rows, relevancy 3 rows, precision 2 + 3 passages
    assert n_calls == 12 and sorted(judge_fn.kinds) == sorted(
        ["StatementGeneratorOutput"] * 2
        + ["NLIStatementOutput"] * 2
        + ["AnswerRelevanceOutput"] * 3
        + ["ContextPrecisionOutput"] * 5
    )
    assert network_guard.attempts == []


# -- LiveKit's JudgeGroup, with the OpenAI plugin's own client -------------------------------------


CRITERIA = {
    "accuracy": "must be accurate and grounded",
    "relevancy": "must be relevant to the user's input",
    "conciseness": "must be concise and efficient",
}


def judge_name(prompt: str) -> str:
    return next(name for name, phrase in CRITERIA.items() if phrase in prompt)


def verdict_call(verdict: str, reasoning: str) -> Script:
    return Script(tool_calls=[ToolCall("submit_verdict", {"verdict": verdict, "reasoning": reasoning})])


def clinic_chat() -> Any:
    from livekit.agents.llm import ChatContext, FunctionCall, FunctionCallOutput

    chat = ChatContext.empty()
    chat.add_message(role="user", content="When do you open on Monday?")
    chat.items.append(FunctionCall(call_id="c1", name="search_knowledge", arguments='{"query": "Monday hours"}'))
    chat.items.append(FunctionCallOutput(call_id="c1", name="search_knowledge", output=HOURS, is_error=False))
    chat.add_message(role="assistant", content="We open at 8 am on Mondays, and close at 6 pm.")
    return chat


async def test_livekit_judge_group_verdicts_follow_the_scripted_tool_calls(network_guard: Any) -> None:
    from livekit.agents.evals import JudgeGroup, accuracy_judge, conciseness_judge
    from livekit.plugins import openai as lk_openai

    answers = {
        "accuracy": verdict_call("pass", "8 am matches the tool output"),
        "conciseness": verdict_call("fail", "the closing time was not asked for"),
    }
    prompts: dict[str, str] = {}

    def route(body: dict[str, Any]) -> Script:
        prompt = content(body["messages"][-1])
        prompts[judge_name(prompt)] = prompt
        return answers[judge_name(prompt)]

    async with ScriptedEndpoint(default=route) as ep:
        llm = lk_openai.LLM(base_url=ep.base_url, api_key="k", model="judge-model")
        try:
            group = JudgeGroup(llm=llm, judges=[accuracy_judge(), conciseness_judge()])
            result = await group.evaluate(clinic_chat())
        finally:
            await llm.aclose()
        reqs = ep.chat_requests
    assert {k: (j.verdict, j.reasoning) for k, j in result.judgments.items()} == {
        "accuracy": ("pass", "8 am matches the tool output"),
        "conciseness": ("fail", "the closing time was not asked for"),
    }
    assert result.judgments["accuracy"].passed and result.judgments["conciseness"].failed
    assert result.score == 0.5 and not result.all_passed and not result.none_failed
    assert len(reqs) == 2
    for r in reqs:  # the verdict is asked for as a forced tool call, streamed
        assert r.body["tool_choice"] == "required" and r.body["stream"] is True
        assert [t["function"]["name"] for t in r.body["tools"]] == ["submit_verdict"]
        assert r.headers["Authorization"] == "Bearer k"
    assert "[function output: " + HOURS + "]" in prompts["accuracy"]
    assert "assistant: We open at 8 am on Mondays" in prompts["conciseness"]
    assert network_guard.attempts == []


async def test_livekit_judges_drop_a_verdict_outside_the_enum_and_a_json_text_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from livekit.agents.evals import JudgeGroup, accuracy_judge, conciseness_judge, relevancy_judge
    from livekit.plugins import openai as lk_openai

    caplog.set_level(logging.WARNING, logger="livekit.agents")  # whatever level an earlier test left
    answers = {
        "accuracy": verdict_call("excellent", "not one of pass/fail/maybe"),
        "conciseness": Script(text='{"verdict": "pass", "reasoning": "JSON text, not a tool call"}'),
        "relevancy": verdict_call("maybe", "scripted"),
    }
    async with ScriptedEndpoint(default=lambda body: answers[judge_name(content(body["messages"][-1]))]) as ep:
        llm = lk_openai.LLM(base_url=ep.base_url, api_key="k", model="judge-model")
        try:
            group = JudgeGroup(llm=llm, judges=[accuracy_judge(), conciseness_judge(), relevancy_judge()])
            result = await group.evaluate(clinic_chat())
        finally:
            await llm.aclose()
    assert {k: j.verdict for k, j in result.judgments.items()} == {"relevancy": "maybe"}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "Judge 'accuracy' failed" in logged and "'pass', 'fail' or 'maybe'" in logged
    assert "Judge 'conciseness' failed: LLM did not return verdict arguments" in logged


# -- the workbench's LiveKit judge scorer end to end --------------------------------------------------

A1 = "We open at 8 am on Mondays."
A2 = "Parking costs 5 dollars an hour in the lot."
LK_VERDICTS = {
    A1: {"accuracy": "pass", "relevancy": "pass", "conciseness": "maybe"},
    A2: {"accuracy": "fail", "relevancy": "pass", "conciseness": "pass"},
}
EXPECTED_LK = {"lk_accuracy": [1.0, 0.0], "lk_relevancy": [1.0, 1.0], "lk_conciseness": [0.5, 1.0]}


def test_livekit_judge_scorer_end_to_end(tmp_path: Path, network_guard: Any) -> None:
    df = typed_frame(
        [
            turn(Q_HOURS, A1, contexts=[HOURS], context_sources=["k/h.md"], reference="Monday: 8 am to 6 pm."),
            turn(
                "And is parking free?",
                A2,
                turn_index=1,
                contexts=[PARKING],
                context_sources=["k/p.md"],
                reference="Yes, there is a free lot with 40 spaces.",
            ),
        ]
    )
    prompts: dict[tuple[str, str], str] = {}
    unexpected: list[str] = []

    def route(body: dict[str, Any]) -> Script:
        prompt = content(body["messages"][-1])
        try:
            conv = prompt.split("Conversation:\n", 1)[1].split("\n\nReference:", 1)[0]
            answer = [ln for ln in conv.splitlines() if ln.startswith("assistant: ")][-1].removeprefix("assistant: ")
            name = judge_name(prompt)
            prompts[name, answer] = prompt
            return verdict_call(LK_VERDICTS[answer][name], f"{name}: scripted for {answer}")
        except Exception as e:
            unexpected.append(f"{type(e).__name__}: {e}")
            return Script(text="unexpected request")

    with ScriptedEndpoint(default=route) as ep:
        judge = JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache")
        out = score_run(df, ["livekit_judges"], judge=judge)
        n_calls = len(ep.chat_requests)
    assert unexpected == [] and n_calls == 6
    outcome = out.attrs["scoring"]["scorers"][0]
    assert outcome["status"] == "ok" and outcome["reason"] is None, outcome
    for col, want in EXPECTED_LK.items():
        assert out[col].tolist() == want, col
    reasons = json.loads(out["lk_judge_reasons"].iloc[1])
    assert reasons["accuracy"] == {"verdict": "fail", "reasoning": f"accuracy: scripted for {A2}"}
    # what the judges saw for the second turn: the earlier turn, the retrieval as a tool call, the reference
    seen = prompts["accuracy", A2]
    assert f"user: {Q_HOURS}\nassistant: {A1}\nuser: And is parking free?" in seen
    assert '[function call: search_knowledge({"query": "And is parking free?"})]' in seen
    assert f"[function output: {PARKING}]" in seen
    assert "Reference:\nuser: And is parking free?\nassistant: Yes, there is a free lot with 40 spaces." in seen
    assert network_guard.attempts == []
