"""The one-screen summary printed after a run: per strategy (and mode) latency, errors, answer length."""

from __future__ import annotations

import pandas as pd


def run_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per strategy x mode: turns, median and p90 time to first chunk and voice-to-voice, error rate, answer words."""
    if df.empty:
        return pd.DataFrame()
    d = df.assign(
        answer_words=df["answer"].fillna("").astype(str).str.split().str.len(),
        is_error=df["error_kind"].notna() & (df["error_kind"].astype(str) != ""),
    )
    g = d.groupby(["strategy", "mode"], sort=False)
    out = pd.DataFrame(
        {
            "turns": g.size(),
            "ttfc_p50_ms": g["llm_ttfc_s"].median() * 1000,
            "ttfc_p90_ms": g["llm_ttfc_s"].quantile(0.9) * 1000,
            "v2v_p50_ms": g["v2v_s"].median() * 1000,
            "v2v_p90_ms": g["v2v_s"].quantile(0.9) * 1000,
            "error_rate": g["is_error"].mean(),
            "answer_words": g["answer_words"].mean(),
        }
    )
    for col in ("fact_recall", "semantic_similarity", "wer"):  # quality, once the run is scored
        if col in d.columns and d[col].notna().any():
            out[col] = g[col].mean()
    return out.round(3).reset_index()
