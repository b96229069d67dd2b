"""Scorers that always run, offline: ragas' non-LLM metrics, MiniLM similarity, fact recall, WER.

Retrieval is scored two ways. By document id (ragas ``IDBasedContextPrecision``/``Recall`` on
``context_sources`` vs ``reference_contexts``): exact and the easiest to explain. By text (ragas
``NonLLMContextPrecisionWithReference``/``NonLLMContextRecall`` on the retrieved passages vs the
reference documents' text, read from the dataset), with a partial-match similarity instead of
whole-string Levenshtein, because a retrieved passage is a *chunk* of a reference document and
Levenshtein between a 200-character chunk and a 1,000-character document is below any useful
threshold even when the chunk was copied from it.
"""

from __future__ import annotations

import os
import typing as t
import warnings
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from workbench.core.aio import run_sync
from workbench.core.cells import as_list, as_text
from workbench.core.metrics import Metric
from workbench.core.wer import wer
from workbench.scoring.base import ScoreContext, Scorer, scorer
from workbench.scoring.facts import fact_recall, missed_facts

NAN = float("nan")


def ragas_metrics() -> Any:
    """Import ``ragas.metrics`` with analytics off (ragas posts usage events unless told not to).

    ``RAGAS_DO_NOT_TRACK`` is set for the whole process, when scoring first uses ragas and only if you have
    not set it yourself, rather than around each call: ragas has no API for it, reads the variable when a
    background thread sends its batched events (after any such scope has ended) and caches the first answer.
    """
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    with warnings.catch_warnings():  # its deprecation notices are for ragas' users' code, not ours
        warnings.filterwarnings("ignore", message=r"Importing .* from 'ragas.metrics' is deprecated", category=Warning)
        import ragas.metrics

    return ragas.metrics


@scorer("ragas_text")
class RagasTextScorer(Scorer):
    """Answer vs reference with ragas' string metrics: Levenshtein similarity, ROUGE-L F1, BLEU, chrF."""

    metrics = (
        Metric("string_similarity", "string similarity", "", "higher", "normalised Levenshtein similarity, 0-1"),
        Metric("rouge_l", "ROUGE-L", "", "higher", "longest common subsequence F1, 0-1"),
        Metric("bleu", "BLEU", "", "higher", "n-gram precision with a brevity penalty, 0-1"),
        Metric("chrf", "chrF", "", "higher", "character n-gram F-score, 0-1"),
    )
    description = "ragas NonLLMStringSimilarity, RougeScore(rougeL), BleuScore, CHRFScore: answer vs reference"

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        ragas_metrics()
        from ragas.metrics.collections import BleuScore, CHRFScore, NonLLMStringSimilarity, RougeScore

        metrics = {
            "string_similarity": NonLLMStringSimilarity(),
            "rouge_l": RougeScore(rouge_type="rougeL", mode="fmeasure"),
            "bleu": BleuScore(),
            "chrf": CHRFScore(),
        }
        pairs = [(as_text(r), as_text(a)) for r, a in zip(df["reference"], df["answer"], strict=True)]

        async def run() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {k: [] for k in metrics}
            for ref, ans in pairs:
                for col, m in metrics.items():
                    if not ref.strip():
                        out[col].append(NAN)  # no reference: nothing to compare with
                    elif not ans.strip():
                        out[col].append(0.0)  # an empty answer shares nothing with the reference
                    else:
                        out[col].append(float((await m.ascore(reference=ref, response=ans)).value))
            return out

        return pd.DataFrame(run_sync(run), index=df.index)


@scorer("semantic")
class SemanticScorer(Scorer):
    """Cosine similarity of MiniLM embeddings (answer vs reference): paraphrases score high."""

    metrics = (
        Metric("semantic_similarity", "semantic similarity", "", "higher", "MiniLM cosine, answer vs reference", True),
    )
    description = "all-MiniLM-L6-v2 cosine similarity, answer vs reference"

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        refs = [as_text(r) for r in df["reference"]]
        answers = [as_text(a) for a in df["answer"]]
        todo = [i for i, (r, a) in enumerate(zip(refs, answers, strict=True)) if r.strip() and a.strip()]
        sims = np.full(len(df), np.nan)
        for i, (r, a) in enumerate(zip(refs, answers, strict=True)):
            if r.strip() and not a.strip():
                sims[i] = 0.0
        if todo:
            texts = sorted({refs[i] for i in todo} | {answers[i] for i in todo})
            vecs = ctx.embedder().embed(texts)
            pos = {s: k for k, s in enumerate(texts)}
            for i in todo:
                sims[i] = float(np.dot(vecs[pos[refs[i]]], vecs[pos[answers[i]]]))
        return pd.DataFrame({"semantic_similarity": np.clip(sims, -1.0, 1.0)}, index=df.index)


@scorer("facts")
class FactScorer(Scorer):
    """Must-mention fact recall with number, time, money and date normalisation (see scoring.facts)."""

    metrics = (
        Metric(
            "fact_recall", "fact recall", "", "higher", "share of the turn's must-mention facts the answer states", True
        ),
        Metric("facts_missed", "facts missed", "", None, "list of the must-mention facts the answer leaves out"),
    )
    description = "share of the turn's must-mention facts the answer states (NaN when it has none)"

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        facts = [[str(f) for f in as_list(v)] for v in df["facts"]]
        answers = [as_text(a) for a in df["answer"]]
        return pd.DataFrame(
            {
                "fact_recall": [fact_recall(f, a) for f, a in zip(facts, answers, strict=True)],
                "facts_missed": [missed_facts(f, a) for f, a in zip(facts, answers, strict=True)],
            },
            index=df.index,
        )


@scorer("wer")
class WerScorer(Scorer):
    """Voice rows: word error rate of what STT heard vs what the caller said (numbers and case normalised)."""

    columns = ("wer",)  # the voice harness writes it too: its metric is the turn table's (replay.schema)
    description = "jiwer WER of transcript vs user_text after normalisation; NaN on text rows"

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        vals = []
        for mode, said, heard in zip(df["mode"], df["user_text"], df["transcript"], strict=True):
            if as_text(mode) != "voice" or heard is None or heard is pd.NA:
                vals.append(NAN)
            else:
                vals.append(wer(as_text(said), as_text(heard)))
        return pd.DataFrame({"wer": vals}, index=df.index, dtype="float64")


# -- retrieval ----------------------------------------------------------------------------------


def canonical_source(source: str) -> str:
    """A retrieved source or reference path as a comparable id: posix, no ``./``, no ``#chunk`` anchor."""
    s = str(source).split("#", 1)[0].strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return str(PurePosixPath(s)) if s else s


def match_sources(retrieved: list[str], references: list[str]) -> list[str]:
    """Retrieved ids rewritten to the reference id they name ("parking.md" matches "knowledge/parking.md")."""
    refs = [canonical_source(r) for r in references]
    out = []
    for src in retrieved:
        c = canonical_source(src)
        hit = next((r for r in refs if c == r or r.endswith("/" + c) or c.endswith("/" + r)), None)
        out.append(hit or c)
    return out


def _partial_similarity_metric() -> Any:
    """A ragas ``SingleTurnMetric``: how well the shorter text aligns inside the longer (rapidfuzz partial_ratio)."""
    ragas_metrics()
    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics.base import MetricType, SingleTurnMetric
    from rapidfuzz import fuzz

    @dataclass
    class PartialStringSimilarity(SingleTurnMetric):
        name: str = "partial_string_similarity"
        _required_columns: t.Dict[MetricType, t.Set[str]] = field(  # noqa: UP006  (ragas' own annotation)
            default_factory=lambda: {MetricType.SINGLE_TURN: {"reference", "response"}}
        )

        def init(self, run_config: Any) -> None:
            pass

        async def _single_turn_ascore(self, sample: SingleTurnSample, callbacks: Any) -> float:
            a, b = " ".join(str(sample.reference).split()), " ".join(str(sample.response).split())
            return fuzz.partial_ratio(a, b) / 100.0

        async def _ascore(self, row: dict[str, Any], callbacks: Any) -> float:
            return await self._single_turn_ascore(SingleTurnSample(**row), callbacks)

    return PartialStringSimilarity()


@scorer("retrieval")
class RetrievalScorer(Scorer):
    """Did the strategy retrieve the documents that hold the answer? By id, and by text against the dataset."""

    metrics = (
        Metric("ctx_precision_id", "context precision (ids)", "", "higher", "retrieved documents that are references"),
        Metric("ctx_recall_id", "context recall (ids)", "", "higher", "reference documents that were retrieved"),
        Metric("ctx_precision_text", "context precision (text)", "", "higher", "passages found in a reference"),
        Metric("ctx_recall_text", "context recall (text)", "", "higher", "references a retrieved passage matches"),
    )
    description = (
        "ragas IDBasedContextPrecision/Recall (context_sources vs reference_contexts) and "
        "NonLLMContextPrecisionWithReference/NonLLMContextRecall (passage text vs reference document text, "
        "partial-match similarity >= threshold); NaN for strategies that never retrieve and turns without "
        "reference documents"
    )
    text_threshold: float = 0.8  # partial_ratio of an unrelated 1 KB document is ~0.45, of the source ~1.0

    def __init__(self) -> None:
        self.note: str | None = None

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        m = ragas_metrics()
        from ragas.dataset_schema import SingleTurnSample

        id_p, id_r = m.IDBasedContextPrecision(), m.IDBasedContextRecall()
        sim = _partial_similarity_metric()
        txt_p = m.NonLLMContextPrecisionWithReference(distance_measure=sim, threshold=self.text_threshold)
        txt_r = m.NonLLMContextRecall(_distance_measure=sim, threshold=self.text_threshold)
        retrieving = {
            s for s, srcs in zip(df["strategy"], df["context_sources"], strict=True) if as_list(srcs)
        }  # a strategy that never retrieved anything is "not applicable", not "recall 0"
        unreadable: set[str] = set()
        can_read = ctx.dataset is not None

        rows = list(zip(df["strategy"], df["context_sources"], df["contexts"], df["reference_contexts"], strict=True))

        async def run() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {c: [] for c in self.columns}
            for strategy, sources, contexts, references in rows:
                refs = [str(r) for r in as_list(references)]
                srcs = [str(s) for s in as_list(sources)]
                texts = [str(c) for c in as_list(contexts)]
                if strategy not in retrieving or not refs:
                    for c in self.columns:
                        out[c].append(NAN)
                    continue
                ids = match_sources(srcs, refs)
                ref_ids = [canonical_source(r) for r in refs]
                if ids:
                    s = SingleTurnSample(retrieved_context_ids=ids, reference_context_ids=ref_ids)
                    out["ctx_precision_id"].append(float(await id_p.single_turn_ascore(s)))
                    out["ctx_recall_id"].append(float(await id_r.single_turn_ascore(s)))
                else:  # retrieved nothing: precision undefined, recall 0
                    out["ctx_precision_id"].append(NAN)
                    out["ctx_recall_id"].append(0.0)
                docs = [ctx.document_text(r) for r in ref_ids] if can_read else []
                if not can_read or any(d is None for d in docs):
                    unreadable.update(r for r, d in zip(ref_ids, docs, strict=False) if d is None)
                    out["ctx_precision_text"].append(NAN)
                    out["ctx_recall_text"].append(NAN)
                    continue
                if not texts:
                    out["ctx_precision_text"].append(NAN)
                    out["ctx_recall_text"].append(0.0)
                    continue
                s = SingleTurnSample(retrieved_contexts=texts, reference_contexts=[d or "" for d in docs])
                out["ctx_precision_text"].append(float(await txt_p.single_turn_ascore(s)))
                out["ctx_recall_text"].append(float(await txt_r.single_turn_ascore(s)))
            return out

        res = pd.DataFrame(run_sync(run), index=df.index)
        if not can_read:
            self.note = "ctx_*_text absent: no dataset folder to read the reference documents from"
            return res[["ctx_precision_id", "ctx_recall_id"]]
        if unreadable:
            self.note = f"reference documents not found in the dataset: {', '.join(sorted(unreadable)[:5])}"
        return res
