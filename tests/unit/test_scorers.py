"""Scorers on hand-made turns: exact values where they can be worked out by hand, orderings otherwise."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.core.store import RunStore, typed_frame
from workbench.scoring import SCORERS, Scorer, fact_mentioned, fact_recall, missed_facts, score_run, scorer
from workbench.scoring.judge import JudgeCache, JudgeLLM

REF = "On Mondays our Main Street location is open from 8 am to 6 pm."
IDENTICAL = REF
PARAPHRASE = "We open at 8:00 a.m. and close at 6 p.m. on Mondays at the Main Street clinic."
WRONG = "Our Lakeside office is at 85 Harbor Road, Suite 200."
MISSING_FACT = "On Mondays the Main Street clinic opens at 8 am."


def turn(answer: str, **kw: Any) -> dict[str, Any]:
    row = {
        "run_id": "r",
        "strategy": "plain",
        "mode": "text",
        "voice": "",
        "conversation_id": "c001",
        "turn_index": 0,
        "repetition": 0,
        "user_text": "What are your hours on Monday at Main Street?",
        "reference": REF,
        "reference_contexts": ["knowledge/hours-main-street.md"],
        "facts": ["8 am", "6 pm"],
        "answer": answer,
        "contexts": [],
        "context_sources": [],
        "context_scores": [],
    }
    row.update(kw)
    return row


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    """Hand-made turns as a typed turn table (repetition numbers keep their keys distinct)."""
    return typed_frame([dict(r, repetition=i) for i, r in enumerate(rows)])


# -- fact recall normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fact", "answer"),
    [
        ("$135", "That visit is 135 dollars."),
        ("$135", "It costs one hundred and thirty-five dollars."),
        ("$135", "The fee is $135.00."),
        ("8 am", "We open at 8:00 a.m."),
        ("8 am", "Doors open at 8AM sharp."),
        ("8 am", "We open at eight in the morning."),
        ("7:30 am", "The lab opens at seven thirty a.m."),
        ("noon", "We close at 12 p.m. on Christmas Eve."),
        ("December 24", "We close early on the 24th of December."),
        ("December 24", "Closed after noon on Dec. 24th."),
        ("September 7", "Closed Monday, September seventh."),
        ("8 am to 8 pm", "Open 8am-8pm."),
        ("8 am to 8 pm", "open from 8 a.m. until 8 p.m."),
        ("2 to 3 business days", "usually 2-3 business days"),
        ("$3 per hour", "the garage charges 3 dollars an hour"),
        ("$3 per hour", "it's $3/hour after that"),
        ("$6.50", "copies cost six dollars and fifty cents"),
        ("extension 2", "call billing at ext. 2"),
        ("Dr. Priya Raman", "Doctor Priya Raman's patients"),
        ("Mondays, Tuesdays and Thursdays", "on Monday, Tuesday, and Thursday"),
        ("Monday to Friday", "Mon - Fri"),
        ("40 spaces", "a free lot with 40 parking spaces"),
        ("Suite 200", "Suite two hundred, on the second floor"),
        ("911", "call 9-1-1 right away"),
    ],
)
def test_fact_is_found_in_equivalent_wording(fact: str, answer: str) -> None:
    assert fact_mentioned(fact, answer)


@pytest.mark.parametrize(
    ("fact", "answer"),
    [
        ("$135", "It costs $13.50."),
        ("$135", "It costs $1350."),
        ("$95", "It costs $95.50."),
        ("8 am", "We open at 9 am."),
        ("8 am", "We open at 18:00."),
        ("8 am", "We open at 8 pm."),
        ("17", "She started in 2017."),
        ("extension 2", "call extension 22"),
        ("8 am to 6 pm", "8 am to 5 pm on weekdays, 6 pm on Fridays"),  # a number in the gap is a different fact
        ("is free", "parking is not free"),  # negation in the gap
        ("no dentist on site", "we have a dentist on site"),
        ("No referral is needed", "You do not need a referral."),  # paraphrase: the semantic scorers' job
        ("Mondays, Tuesdays and Thursdays", "Tuesdays, Mondays and Thursdays"),
        ("8 am", ""),
    ],
)
def test_fact_is_not_found_when_the_answer_says_something_else(fact: str, answer: str) -> None:
    assert not fact_mentioned(fact, answer)


def test_fact_recall_counts_each_fact_and_is_nan_without_facts() -> None:
    assert fact_recall(["8 am", "6 pm"], IDENTICAL) == 1.0
    assert fact_recall(["8 am", "6 pm"], MISSING_FACT) == 0.5
    assert missed_facts(["8 am", "6 pm"], MISSING_FACT) == ["6 pm"]
    assert fact_recall(["8 am", "6 pm"], WRONG) == 0.0
    assert math.isnan(fact_recall([], IDENTICAL))
    assert math.isnan(fact_recall(None, IDENTICAL))


# -- ragas string metrics, fact scorer, WER ---------------------------------------------------------


@pytest.fixture(scope="module")
def text_scores() -> pd.DataFrame:
    df = frame(
        turn(IDENTICAL),
        turn(PARAPHRASE),
        turn(WRONG),
        turn(MISSING_FACT),
        turn(""),
        turn("Anything at all.", reference=""),
    )
    return score_run(df, ["ragas_text", "facts"])


def test_identical_answer_scores_one_on_every_string_metric(text_scores: pd.DataFrame) -> None:
    row = text_scores.iloc[0]
    for col in ("string_similarity", "rouge_l", "bleu", "chrf", "fact_recall"):
        assert row[col] == pytest.approx(1.0), col


def test_paraphrase_beats_wrong_answer_on_overlap_metrics(text_scores: pd.DataFrame) -> None:
    para, wrong = text_scores.iloc[1], text_scores.iloc[2]
    for col in ("rouge_l", "chrf", "fact_recall"):
        assert para[col] > wrong[col], col
    assert para["fact_recall"] == 1.0 and wrong["fact_recall"] == 0.0
    # Levenshtein rewards shared characters, not meaning: a paraphrase is not guaranteed to beat a wrong answer
    assert 0 < para["string_similarity"] < 1


def test_missing_fact_halves_recall_and_names_the_fact(text_scores: pd.DataFrame) -> None:
    row = text_scores.iloc[3]
    assert row["fact_recall"] == 0.5
    assert list(row["facts_missed"]) == ["6 pm"]


def test_empty_answer_scores_zero_and_missing_reference_is_nan(text_scores: pd.DataFrame) -> None:
    empty, no_ref = text_scores.iloc[4], text_scores.iloc[5]
    for col in ("string_similarity", "rouge_l", "bleu", "chrf"):
        assert empty[col] == 0.0
        assert math.isnan(no_ref[col])


def test_rouge_l_matches_a_hand_count() -> None:
    # LCS "the clinic opens at" = 4 of 5 words on both sides: P = R = F1 = 0.8
    df = frame(turn("the clinic opens at nine", reference="the clinic opens at eight"))
    assert score_run(df, ["ragas_text"]).iloc[0]["rouge_l"] == pytest.approx(0.8)


def test_wer_scores_voice_rows_only_with_number_normalisation() -> None:
    df = frame(
        turn(IDENTICAL, mode="voice", voice="piper", user_text="we open at eight", transcript="We open at 8."),
        turn(
            IDENTICAL,
            mode="voice",
            voice="piper",
            user_text="the clinic opens at nine",
            transcript="the clinic closes at nine",
        ),
        turn(IDENTICAL),
    )
    out = score_run(df, ["wer"])
    assert out["wer"].iloc[0] == 0.0
    assert out["wer"].iloc[1] == pytest.approx(0.2)
    assert math.isnan(out["wer"].iloc[2])


# -- retrieval ---------------------------------------------------------------------------------------


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    k = tmp_path / "ds" / "knowledge"
    k.mkdir(parents=True)
    (k / "hours.md").write_text(
        "# Hours\n\nMain Street is open Monday to Friday from 8 am to 6 pm, Saturday from 9 am to 1 pm. "
        "Lakeside is open Monday to Friday from 9 am to 5 pm and closed at weekends.\n"
    )
    (k / "parking.md").write_text(
        "# Parking\n\nThere is a free lot behind the Main Street building with 40 spaces; the entrance is on Elm "
        "Avenue. At Lakeside, park in the Harbor Plaza garage: the first 90 minutes are free.\n"
    )
    return tmp_path / "ds"


def test_retrieval_by_id_and_by_text(dataset: Path) -> None:
    refs = ["knowledge/hours.md"]
    hours_chunk = "Main Street is open Monday to Friday from 8 am to 6 pm"
    parking_chunk = "There is a free lot behind the Main Street building with 40 spaces"
    df = frame(
        turn(
            IDENTICAL,
            strategy="rag",
            reference_contexts=refs,
            context_sources=["knowledge/hours.md"],
            contexts=[hours_chunk],
        ),
        turn(
            IDENTICAL,
            strategy="rag",
            reference_contexts=refs,
            context_sources=["parking.md", "knowledge/hours.md#2"],
            contexts=[parking_chunk, hours_chunk],
        ),
        turn(
            IDENTICAL,
            strategy="rag",
            reference_contexts=refs,
            context_sources=["knowledge/parking.md"],
            contexts=[parking_chunk],
        ),
        turn(
            IDENTICAL,
            strategy="rag",
            reference_contexts=[],
            context_sources=["knowledge/hours.md"],
            contexts=[hours_chunk],
        ),
        turn(IDENTICAL, strategy="plain"),
    )
    out = score_run(df, ["retrieval"], dataset=dataset)
    got = out[["ctx_precision_id", "ctx_recall_id", "ctx_precision_text", "ctx_recall_text"]].to_numpy()
    np.testing.assert_allclose(got[0], [1.0, 1.0, 1.0, 1.0])
    # the right document ranked second: id precision 1/2; average precision 1/2; recall complete
    np.testing.assert_allclose(got[1], [0.5, 1.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(got[2], [0.0, 0.0, 0.0, 0.0])
    assert np.isnan(got[3]).all()  # no reference documents: not applicable
    assert np.isnan(got[4]).all()  # a strategy that never retrieves: not applicable, not "recall 0"


def test_retrieval_without_dataset_keeps_id_metrics_and_says_why_text_ones_are_absent() -> None:
    df = frame(
        turn(
            IDENTICAL,
            strategy="rag",
            context_sources=["knowledge/hours-main-street.md"],
            contexts=["Monday: 8 am to 6 pm"],
        )
    )
    out = score_run(df, ["retrieval"])
    assert out["ctx_recall_id"].iloc[0] == 1.0
    assert "ctx_recall_text" not in out.columns
    outcome = out.attrs["scoring"]["scorers"][0]
    assert outcome["columns"] == ["ctx_precision_id", "ctx_recall_id"]
    assert "no dataset" in outcome["reason"]


# -- the registry ------------------------------------------------------------------------------------


def test_registry_registers_by_name_and_rejects_duplicates_and_unknown_names() -> None:
    @scorer("answer_length_test")
    class AnswerLength(Scorer):
        columns = ("answer_words",)

        def score(self, df: pd.DataFrame, ctx: Any) -> pd.DataFrame:
            return pd.DataFrame({"answer_words": df["answer"].fillna("").str.split().str.len()}, index=df.index)

    try:
        assert SCORERS["answer_length_test"] is AnswerLength
        out = score_run(frame(turn("one two three")), ["answer_length_test"])
        assert out["answer_words"].iloc[0] == 3
        with pytest.raises(ValueError, match="already registered"):
            scorer("answer_length_test")(type("Other", (AnswerLength,), {}))
        with pytest.raises(KeyError, match="no_such_scorer"):
            score_run(frame(turn("x")), ["no_such_scorer"])
    finally:
        SCORERS.pop("answer_length_test", None)


def test_a_failing_scorer_is_recorded_and_the_others_still_add_their_columns() -> None:
    @scorer("broken_test")
    class Broken(Scorer):
        columns = ("broken",)

        def score(self, df: pd.DataFrame, ctx: Any) -> pd.DataFrame:
            raise RuntimeError("boom")

    try:
        out = score_run(frame(turn(IDENTICAL)), ["broken_test", "facts"])
    finally:
        SCORERS.pop("broken_test", None)
    outcomes = {o["name"]: o for o in out.attrs["scoring"]["scorers"]}
    assert outcomes["broken_test"]["status"] == "failed" and "boom" in outcomes["broken_test"]["reason"]
    assert "broken" not in out.columns
    assert out["fact_recall"].iloc[0] == 1.0


def test_all_nan_columns_are_left_out_with_the_reason_not_stored_as_placeholders() -> None:
    out = score_run(frame(turn(IDENTICAL), turn(WRONG)), ["retrieval", "facts"])  # nobody retrieved anything
    assert not any(c.startswith("ctx_") for c in out.columns)
    outcome = out.attrs["scoring"]["scorers"][0]
    assert outcome["status"] == "skipped" and "ctx_recall_id absent: no row it applies to" in outcome["reason"]


def test_without_a_judge_the_judge_columns_are_absent_and_the_reason_is_recorded() -> None:
    out = score_run(frame(turn(IDENTICAL)), ["ragas_llm", "livekit_judges"])
    for col in ("faithfulness", "answer_relevancy", "llm_context_precision", "lk_accuracy"):
        assert col not in out.columns
    for o in out.attrs["scoring"]["scorers"]:
        assert o["status"] == "skipped" and "--judge-endpoint" in o["reason"]


# -- the judge path, against a scripted OpenAI-compatible endpoint -----------------------------------


class BagOfWordsEmbedder:
    """Deterministic stand-in for MiniLM (unit tests must not load torch): identical texts -> cosine 1."""

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


def scripted_judge(body: dict[str, Any]) -> Any:
    """A judge that knows the truth: an answer is right when it says '8 am'; it answers in each caller's format."""
    from workbench.faults.endpoint import Script, ToolCall

    text = "\n".join(str(m.get("content")) for m in body["messages"])
    if body.get("tools"):  # LiveKit judges: a submit_verdict tool call
        said = text.split("Conversation:")[-1].split("Reference:")[0]
        verdict = "pass" if "8 am" in said else "fail"
        return Script(tool_calls=[ToolCall("submit_verdict", {"verdict": verdict, "reasoning": "scripted"})])
    if '"title": "StatementGeneratorOutput"' in text:  # ragas faithfulness, step 1
        answer = text.rsplit('"answer":', 1)[-1]
        return Script(text=json.dumps({"statements": ["claim: " + ("8 am" if "8 am" in answer else "other")]}))
    if '"title": "NLIStatementOutput"' in text:  # step 2: supported by the passages?
        ok = "claim: 8 am" in text and "Monday: 8 am to 6 pm" in text
        return Script(text=json.dumps({"statements": [{"statement": "s", "reason": "r", "verdict": int(ok)}]}))
    if '"title": "AnswerRelevanceOutput"' in text:
        relevant = "Monday" in text.rsplit('"response":', 1)[-1]
        question = "What are your hours on Monday at Main Street?" if relevant else "Where is Lakeside?"
        return Script(text=json.dumps({"question": question, "noncommittal": 0}))
    if '"title": "ContextPrecisionOutput"' in text:
        return Script(text=json.dumps({"reason": "scripted", "verdict": int('"Monday: 8 am to 6 pm"' in text)}))
    raise AssertionError(f"unexpected judge request: {text[:300]}")


def test_judge_scorers_against_a_scripted_endpoint_and_the_cache(tmp_path: Path) -> None:
    from workbench.faults.endpoint import ScriptedEndpoint

    passage = "Monday: 8 am to 6 pm"
    df = frame(
        turn("We open at 8 am on Mondays.", strategy="rag", contexts=[passage], context_sources=["k/h.md"]),
        turn(WRONG, strategy="rag", contexts=["Lakeside: 85 Harbor Road"], context_sources=["k/l.md"]),
        turn("We open at 8 am every Monday.", strategy="plain"),
    )
    with ScriptedEndpoint(default=scripted_judge) as ep:
        judge = JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache")
        out = score_run(df, ["ragas_llm", "livekit_judges"], judge=judge, stack=TinyStack())
        calls = len(ep.chat_requests)
        # a re-score costs no judge calls: every request is answered from the disk cache
        judge2 = JudgeLLM(base_url=ep.base_url, model="judge-model", cache_dir=tmp_path / "cache")
        again = score_run(df, ["ragas_llm", "livekit_judges"], judge=judge2, stack=TinyStack())
        assert len(ep.chat_requests) == calls
    assert calls == 4 + 3 + 2 + 9  # faithfulness 2 rows x 2 steps, relevancy 3, precision 2, LiveKit 3 rows x 3
    assert out["faithfulness"].tolist()[:2] == [1.0, 0.0]
    assert math.isnan(out["faithfulness"].iloc[2])  # no passages: faithfulness does not apply
    assert out["answer_relevancy"].iloc[0] == pytest.approx(1.0)
    assert out["answer_relevancy"].iloc[1] < 0.5
    assert out["llm_context_precision"].tolist()[:2] == pytest.approx([1.0, 0.0])
    assert out["lk_accuracy"].tolist() == [1.0, 0.0, 1.0]
    assert json.loads(out["lk_judge_reasons"].iloc[1])["accuracy"]["verdict"] == "fail"
    pd.testing.assert_frame_equal(out, again)
    assert again.attrs["scoring"]["judge"]["cache_hits"] == calls
    assert again.attrs["scoring"]["judge"]["cache_misses"] == 0
    assert "api_key" not in json.dumps(again.attrs["scoring"])


def test_a_judge_that_cannot_follow_the_format_fails_visibly_not_with_placeholders(tmp_path: Path) -> None:
    from workbench.faults.endpoint import Script, ScriptedEndpoint

    df = frame(
        turn(
            "We open at 8 am on Mondays.", strategy="rag", contexts=["Monday: 8 am to 6 pm"], context_sources=["k/h.md"]
        )
    )
    with ScriptedEndpoint(default=Script(text="Sure! The answer looks fine to me.")) as ep:
        judge = JudgeLLM(base_url=ep.base_url, model="tiny-model", cache_dir=tmp_path / "cache")
        out = score_run(df, ["ragas_llm", "livekit_judges"], judge=judge, stack=TinyStack())
    assert not {"faithfulness", "answer_relevancy", "lk_accuracy", "lk_judge_reasons"} & set(out.columns)
    outcomes = {o["name"]: o for o in out.attrs["scoring"]["scorers"]}
    assert outcomes["ragas_llm"]["status"] == "failed"
    assert "faithfulness absent: every row it applies to failed" in outcomes["ragas_llm"]["reason"]
    assert "answer_relevancy: 1 row(s) failed" in outcomes["ragas_llm"]["reason"]
    assert outcomes["livekit_judges"]["status"] == "failed"
    assert "lk_accuracy absent: every row it applies to failed" in outcomes["livekit_judges"]["reason"]


def test_judge_cache_key_changes_with_model_and_prompt_and_ignores_key_order() -> None:
    a = JudgeCache.key(b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}]}')
    assert a == JudgeCache.key(b'{"messages": [{"role": "user", "content": "hi"}], "model": "m1"}')
    assert a != JudgeCache.key(b'{"model": "m2", "messages": [{"role": "user", "content": "hi"}]}')
    assert a != JudgeCache.key(b'{"model": "m1", "messages": [{"role": "user", "content": "hi!"}]}')


# -- stored scores and the CLI ------------------------------------------------------------------------


def write_run(runs: Path, run_id: str, rows: list[dict[str, Any]], dataset: Path | None = None) -> Path:
    store = RunStore(runs / run_id)
    store.write_manifest(
        {"run_id": run_id, "name": run_id, "status": "complete", "dataset": str(dataset) if dataset else None}
    )
    for r in rows:
        store.append(dict(r, run_id=run_id))
    store.compact()
    store.close()
    return runs / run_id


def test_workbench_score_stores_columns_beside_the_run_and_rescoring_replaces(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.scoring.persist import load_scored

    runs = tmp_path / "runs"
    write_run(runs, "r1", [turn(IDENTICAL), turn(MISSING_FACT, repetition=1)])
    cli = CliRunner()
    res = cli.invoke(app, ["score", "r1", "--runs-dir", str(runs), "--scorers", "facts,wer,ragas_llm"])
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output
    stored = pd.read_parquet(runs / "r1" / "scores.parquet")
    assert {"strategy", "conversation_id", "turn_index", "repetition", "fact_recall"} <= set(stored.columns)
    assert "wer" not in stored.columns  # a text-only run: WER applies to no row, so no all-NaN column is stored
    meta = json.loads((runs / "r1" / "scores.json").read_text())
    outcomes = {s["name"]: s for s in meta["scorers"]}
    assert {k: o["status"] for k, o in outcomes.items()} == {"facts": "ok", "wer": "skipped", "ragas_llm": "skipped"}
    assert outcomes["wer"]["reason"] == "wer absent: no row it applies to"

    res = cli.invoke(app, ["score", "r1", "--runs-dir", str(runs), "--scorers", "ragas_text"])
    assert res.exit_code == 0, res.output
    scored = load_scored("r1", runs)
    assert scored.rows.sort_values("repetition")["fact_recall"].tolist() == [1.0, 0.5]  # kept from the first scoring
    assert scored.rows["rouge_l"].notna().all()
    assert {s["name"] for s in scored.scoring["scorers"]} == {"facts", "wer", "ragas_llm", "ragas_text"}

    res = cli.invoke(app, ["score", "r1", "--runs-dir", str(runs), "--scorers", "nope"])
    assert res.exit_code == 2 and "unknown scorer" in res.output
    res = cli.invoke(app, ["score", "no-such-run", "--runs-dir", str(runs)])
    assert res.exit_code == 2 and "no run" in res.output


# -- real MiniLM (slow to load: integration) ---------------------------------------------------------


@pytest.mark.integration
def test_semantic_similarity_with_minilm_ranks_paraphrase_above_wrong_answer(stack: Any) -> None:
    df = frame(turn(IDENTICAL), turn(PARAPHRASE), turn(WRONG), turn(""))
    sims = score_run(df, ["semantic"], stack=stack)["semantic_similarity"].tolist()
    assert sims[0] == pytest.approx(1.0, abs=1e-4)
    assert sims[1] > 0.7 > 0.4 > sims[2]
    assert sims[3] == 0.0
