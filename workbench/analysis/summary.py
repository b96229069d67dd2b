"""The one-screen summary printed after a run: per strategy (and mode) latency, errors, answer length."""

from __future__ import annotations

import pandas as pd

from workbench.analysis.stats import is_error, score_columns
from workbench.core.metrics import metric


def run_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per strategy x mode: turns, median and p90 time to first chunk and voice-to-voice, error rate, answer words.

    Then the mean of each headline score the rows hold (``Metric.headline``: fact recall, semantic similarity,
    WER, tool-call accuracy, and any a user's scorer marks; one no row has is left out); ``compare()`` and the
    report show every score.
    """
    if df.empty:
        return pd.DataFrame()
    # a headline score no row has (tool-call accuracy on a run without expected calls) would be an empty column
    scores = [c for c in score_columns(df) if (m := metric(c)) is not None and m.headline and df[c].notna().any()]
    d = df.assign(
        answer_words=df["answer"].fillna("").astype(str).str.split().str.len(),
        is_error=is_error(df),
        **{c: pd.to_numeric(df[c], errors="coerce") for c in scores},
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
    for col in scores:
        out[col] = g[col].mean()
    return out.round(3).reset_index()
