"""Synthetic turn tables with known effects, for tests, docs and trying the analysis without a run.

The numbers follow what runs on these machines look like (field notes): log-normal LLM times
with a per-turn difficulty shared by every strategy (long prompts are slow for everyone, which
is what makes paired comparisons powerful), VAD end-of-turn delays around 0.5-0.8 s, Whisper
around 0.3-0.6 s, Piper first audio around 0.1 s, and fact recall in steps of 1/len(facts).
Nothing here is presented as measured: the rows carry ``run_id`` "synthetic".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.core.store import typed_frame

_TOPICS = [
    (
        "What time do you open on Mondays at Main Street?",
        "On Mondays Main Street is open from 8 am to 6 pm.",
        ["8 am", "6 pm"],
        "knowledge/hours-main-street.md",
    ),
    (
        "Where is the Lakeside office?",
        "Lakeside is at 85 Harbor Road, Suite 200.",
        ["85 Harbor Road", "Suite 200"],
        "knowledge/locations-and-directions.md",
    ),
    (
        "How much is a physiotherapy session?",
        "A first physiotherapy session costs $135.",
        ["$135"],
        "knowledge/physiotherapy.md",
    ),
    (
        "Is parking free at Main Street?",
        "Yes, there is a free lot with 40 spaces; the entrance is on Elm Avenue.",
        ["40 spaces", "Elm Avenue"],
        "knowledge/parking.md",
    ),
    (
        "Are you open on Labor Day?",
        "No, both locations are closed on Monday, September 7.",
        ["September 7"],
        "knowledge/holiday-closures-2026.md",
    ),
    (
        "How do I get my lab results?",
        "Results are in DianaConnect within 2 to 3 business days.",
        ["2 to 3 business days", "DianaConnect"],
        "knowledge/lab-results.md",
    ),
]


@dataclass(frozen=True)
class Profile:
    """How a synthetic strategy behaves: median LLM times (s), log-normal spread, skill, error rate."""

    ttfc_s: float = 0.45
    total_s: float = 1.2
    sigma: float = 0.25
    skill: float = 0.7  # probability of stating a fact on an average-difficulty turn
    error_rate: float = 0.02


def synthetic_run(
    profiles: dict[str, Profile] | None = None,
    *,
    conversations: int = 12,
    turns: int = 2,
    repetitions: int = 3,
    modes: tuple[str, ...] = ("text", "voice"),
    voice: str = "piper",
    seed: int = 0,
) -> pd.DataFrame:
    """A scored turn table (schema columns plus ``fact_recall``, ``semantic_similarity``, ``rouge_l``)."""
    profiles = profiles or {"plain": Profile(), "rag": Profile(ttfc_s=0.6, total_s=1.5, skill=0.85)}
    rng = np.random.default_rng(seed)
    n_items = conversations * turns
    difficulty = rng.normal(0.0, 0.35, size=n_items)  # shared by all strategies: the pairing's signal
    fact_ease = rng.normal(0.0, 1.0, size=n_items)
    rows = []
    for s_i, (name, p) in enumerate(profiles.items()):
        srng = np.random.default_rng([seed, s_i + 1])
        for mode in modes:
            for rep in range(repetitions):
                for item in range(n_items):
                    conv, turn = divmod(item, turns)
                    q, ref, facts, doc = _TOPICS[item % len(_TOPICS)]
                    ttfc = p.ttfc_s * np.exp(difficulty[item] + srng.normal(0, p.sigma))
                    total = max(ttfc, p.total_s * np.exp(0.6 * difficulty[item] + srng.normal(0, p.sigma)))
                    failed = srng.random() < p.error_rate
                    logit = np.log(p.skill / (1 - p.skill)) + fact_ease[item]
                    stated = [f for f in facts if srng.random() < 1 / (1 + np.exp(-logit))]
                    recall = 0.0 if failed else len(stated) / len(facts)
                    answer = "" if failed else (ref if recall == 1 else " ".join(["We can help with that.", *stated]))
                    row = {
                        "run_id": "synthetic",
                        "strategy": name,
                        "mode": mode,
                        "conversation_id": f"c{conv:03d}",
                        "turn_index": turn,
                        "repetition": rep,
                        "voice": voice if mode == "voice" else "",
                        "tags": ["synthetic"],
                        "started_at": pd.Timestamp("2026-11-02T10:00:00Z").isoformat(),
                        "user_text": q,
                        "reference": ref,
                        "reference_contexts": [doc],
                        "facts": facts,
                        "answer": answer,
                        "contexts": [],
                        "context_sources": [],
                        "context_scores": [],
                        "llm_ttfc_s": float(ttfc),
                        "llm_total_s": float(total),
                        "error_kind": "timeout" if failed else None,
                        "error": "synthetic timeout" if failed else None,
                        "history_dropped": 0,
                        "interruptions": 0,
                        "realtime": mode == "voice",
                        "fact_recall": recall,
                        "semantic_similarity": float(np.clip(0.45 + 0.5 * recall + srng.normal(0, 0.05), 0, 1)),
                        "rouge_l": float(np.clip(0.2 + 0.6 * recall + srng.normal(0, 0.05), 0, 1)),
                    }
                    if mode == "voice":
                        eou = 0.5 + srng.exponential(0.12)
                        stt = 0.25 + srng.gamma(4, 0.05)
                        tts = 0.08 + srng.gamma(3, 0.015)
                        row.update(
                            audio_path=f"audio/{voice}/c{conv:03d}_{turn}.wav",
                            speech_end_s=2.0 + 0.3 * turn,
                            eou_delay_s=eou,
                            stt_s=stt,
                            transcript=q.lower(),
                            wer=0.0,
                            tts_ttfb_s=tts,
                            # the critical path: request start, the first sentence's rest and playout make the 50 ms
                            llm_start_s=0.004,
                            llm_ttfs_s=ttfc + 0.04,
                            playout_s=0.006,
                            unattributed_s=0.0,
                            v2v_s=eou + ttfc + tts + 0.05,
                            agent_audio_s=3.0 + 2 * recall,
                        )
                    rows.append(row)
    df = typed_frame(rows)
    start = pd.Timestamp("2026-11-02T10:00:00Z")
    # turns of one conversation follow each other: started_at = previous turn + its audio and reply
    df["started_at"] = [
        (start + pd.Timedelta(seconds=12.0 * t + 60 * r)).isoformat()
        for t, r in zip(df["turn_index"], df["repetition"], strict=True)
    ]
    return df


def degrade(
    df: pd.DataFrame,
    strategy: str,
    new_name: str,
    *,
    latency_factor: float = 1.25,
    recall_drop: float = 0.25,
    seed: int = 1,
) -> pd.DataFrame:
    """``df`` plus a copy of ``strategy`` that is slower and loses facts: a difference a test must detect."""
    rng = np.random.default_rng(seed)
    d = df[df["strategy"] == strategy].copy()
    d["strategy"] = new_name
    n = len(d)
    slow = latency_factor * np.exp(rng.normal(0, 0.05, n))
    for c in ("llm_ttfc_s", "llm_total_s"):
        d[c] = d[c] * slow
    if "v2v_s" in d:
        d["v2v_s"] = d["v2v_s"] + d["llm_ttfc_s"] * (1 - 1 / slow)
        d["llm_ttfs_s"] = d["llm_ttfs_s"] + d["llm_ttfc_s"] * (1 - 1 / slow)  # the slower first chunk delays it
    lose = rng.random(n) < recall_drop
    d.loc[lose, "fact_recall"] = np.maximum(0.0, d.loc[lose, "fact_recall"] - 0.5)
    d["semantic_similarity"] = np.clip(d["semantic_similarity"] - 0.1 * lose, 0, 1)
    return pd.concat([df, d], ignore_index=True)
