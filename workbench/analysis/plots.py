"""Plots of a turn table (matplotlib ``Figure`` objects, no pyplot state, so they work headless and in threads).

- :func:`latency_ecdf`: the whole distribution of each latency, one line per strategy (tails matter in voice).
- :func:`stage_breakdown`: where the voice-to-voice time goes, per strategy (mean stages on the critical path).
- :func:`quality_latency`: quality vs latency with intervals and the Pareto front (what to ship).
- :func:`waterfall`: one conversation's turns on a time line, stage by stage.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.analysis.stats import label
from workbench.core.schema import CRITICAL_PATH, SLICES, critical_path

if TYPE_CHECKING:
    from workbench.analysis.compare import Comparison

STAGE_COLORS = {
    "stt_s": "#bdbdbd",
    "eou_after_stt": "#8da0cb",
    "eou_delay_s": "#8da0cb",
    "llm_start_s": "#e78ac3",
    "llm_ttfc_s": "#fc8d62",
    "llm_sentence_rest": "#fdae6b",
    "llm_rest": "#fdd0a2",
    "tts_ttfb_s": "#66c2a5",
    "playout_s": "#ffd92f",
    "unattributed_s": "#e5e5e5",
    "speech": "#b2df8a",
    "agent_audio": "#cab2d6",
}
"""One colour per slice of :data:`workbench.core.schema.SLICES` (and the waterfall's extras)."""
SLICE_LABELS = {
    "eou_after_stt": "end of turn (after the transcript)",
    "llm_sentence_rest": "LLM first sentence (after the first chunk)",
    "llm_rest": "LLM rest of answer",
    "unattributed_s": "unattributed (stages not measured)",
}
"""Labels of the slices that are not columns; the others come from the metric catalogue."""


def strategy_colors(strategies: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(sorted(set(strategies)))}  # by name: same colour in every plot


def _strategies(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["strategy"].astype(str)))


def _empty(fig: Figure, ax: Any, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_axis_off()
    return fig


def latency_ecdf(df: pd.DataFrame, columns: tuple[str, ...] = ("llm_ttfc_s", "llm_total_s", "v2v_s")) -> Figure:
    """Empirical CDFs of each latency column, one panel per column, one line per strategy (p50/p90 marked)."""
    cols = [c for c in columns if c in df.columns and df[c].notna().any()]
    fig = Figure(figsize=(4.2 * max(1, len(cols)), 3.4), layout="constrained")
    if not cols:
        return _empty(fig, fig.add_subplot(), "no latency figures in this run")
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    colors = strategy_colors(_strategies(df))
    for ax, c in zip(axes, cols, strict=True):
        for s, g in df.groupby("strategy", sort=False, observed=True):
            v = np.sort(g[c].dropna().to_numpy(dtype=float))
            if len(v) == 0:
                continue
            y = np.arange(1, len(v) + 1) / len(v)
            ax.step(v, y, where="post", color=colors[str(s)], label=f"{s} (n={len(v)})")
        for q in (0.5, 0.9):
            ax.axhline(q, color="#999", lw=0.6, ls=":")
        ax.set_title(label(c))
        ax.set_xlabel("seconds")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("share of turns at or below")
    axes[-1].legend(fontsize=8, loc="lower right")
    return fig


def critical_path_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Each voice row with a voice-to-voice figure cut into :data:`SLICES` (seconds), plus its strategy.

    The same rule the harness uses for ``unattributed_s``, applied here too so runs recorded before the
    stage columns existed still split (their missing stages show as unattributed).
    """
    voice = df[df["mode"] == "voice"] if "mode" in df else df.iloc[0:0]
    read = [c for c in ("v2v_s", "stt_s", "llm_ttfc_s", *CRITICAL_PATH) if c in voice.columns]
    rows = []
    for strategy, record in zip(voice["strategy"].astype(str), voice[read].to_dict("records"), strict=True):
        path = critical_path(record)
        if path is not None:
            rows.append({"strategy": strategy, **path})
    return pd.DataFrame(rows, columns=["strategy", *SLICES])


def stage_means(df: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: voice turns, the mean of each slice (they add up to ``v2v_mean``) and the median v2v."""
    path = critical_path_frame(df)
    if path.empty:
        return pd.DataFrame(columns=["strategy", "turns", *SLICES, "v2v_mean", "v2v_p50"])
    g = path.groupby("strategy", sort=False)
    out = g[list(SLICES)].mean()
    out.insert(0, "turns", g.size())
    out["v2v_mean"] = out[list(SLICES)].sum(axis=1)
    v2v = df[(df["mode"] == "voice") & df["v2v_s"].notna()].groupby(df["strategy"].astype(str))["v2v_s"]
    out["v2v_p50"] = v2v.median().reindex(out.index)
    return out.reset_index()


def stage_breakdown(df: pd.DataFrame) -> Figure:
    """Mean time per critical-path stage and strategy, stacked from the end of user speech to playout.

    Voice rows: STT final, the rest of the end of turn, the LLM request start, LLM first chunk, the rest of
    its first sentence, TTS first audio, playout start, and what no measured stage covers. Means, because
    they add up: each bar is the strategy's mean voice-to-voice (its median is written beside it).
    Text-only runs: LLM first chunk and the rest of the answer (medians).
    """
    strategies = _strategies(df)
    means = stage_means(df).set_index("strategy")
    has_voice = not means.empty
    fig = Figure(figsize=(8.5, 0.75 * len(strategies) + 2.0), layout="constrained")
    ax = fig.add_subplot()
    if not has_voice and not df["llm_ttfc_s"].notna().any():
        return _empty(fig, ax, "no stage timings in this run")
    y = np.arange(len(strategies))
    used: set[str] = set()
    for i, s in enumerate(strategies):
        if has_voice:
            if s not in means.index:
                continue
            segments = [(name, float(means.at[s, name])) for name in SLICES]
        else:
            g = df[df["strategy"] == s]
            med = {c: float(g[c].median()) if g[c].notna().any() else 0.0 for c in ("llm_ttfc_s", "llm_total_s")}
            segments = [
                ("llm_ttfc_s", med["llm_ttfc_s"]),
                ("llm_rest", max(0.0, med["llm_total_s"] - med["llm_ttfc_s"])),
            ]
        left = 0.0
        for name, width in segments:
            if abs(width) < 0.0005:  # not measured in this run, or nothing to see
                continue
            ax.barh(
                i,
                width,
                left=left,
                height=0.55,
                color=STAGE_COLORS[name],
                edgecolor="white",
                label=None if name in used else stage_label(name),
            )
            if abs(width) > 0.06:
                ax.text(left + width / 2, i, f"{width:.2f}", ha="center", va="center", fontsize=7)
            used.add(name)
            left += width
        if has_voice:
            total, p50 = means.at[s, "v2v_mean"], means.at[s, "v2v_p50"]
            ax.text(left, i, f"  {total:.2f} s (p50 {p50:.2f})", va="center", fontsize=7)
    ax.set_yticks(y, strategies)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the end of user speech (means)" if has_voice else "seconds from the request (medians)")
    ax.set_title("Where the time goes" + (" (voice to voice, stage by stage)" if has_voice else " (text mode)"))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=3)
    ax.grid(axis="x", alpha=0.25)
    ax.margins(x=0.12)
    return fig


def stage_label(name: str) -> str:
    """A slice's label: the metric catalogue's for a column, a fixed one for a derived slice."""
    return SLICE_LABELS.get(name) or label(name)


def quality_latency(comparison: Comparison) -> Figure:
    """Each strategy's mean quality (95% interval) against its latency percentile, with the Pareto front."""
    board = comparison.leaderboard
    obj = comparison.objective
    fig = Figure(figsize=(6.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    pts = board.dropna(subset=["latency", "quality"])
    if pts.empty:
        return _empty(fig, ax, "no strategy has both a latency and a quality figure")
    colors = strategy_colors(list(board["strategy"]))
    for _, r in pts.iterrows():
        yerr = [[r["quality"] - r["quality_ci_low"]], [r["quality_ci_high"] - r["quality"]]]
        yerr = [[0 if math.isnan(e[0]) else max(0.0, e[0])] for e in yerr]
        ax.errorbar(
            r["latency"],
            r["quality"],
            yerr=yerr,
            fmt="o",
            ms=8,
            capsize=4,
            color=colors[r["strategy"]],
            label=r["strategy"],
        )
        ax.annotate(r["strategy"], (r["latency"], r["quality"]), textcoords="offset points", xytext=(7, 5), fontsize=8)
    front = pts[pts["pareto"]].sort_values("latency")
    if len(front) >= 1:
        xs, ys = list(front["latency"]), list(front["quality"])
        ax.step(xs, ys, where="post", color="#333", lw=1, ls="--", label="Pareto front")
    if obj.budget_s is not None:
        ax.axvline(obj.budget_s, color="#d62728", lw=1, ls=":", label=f"budget {obj.budget_s:g} s")
    lat = pts["latency_metric"].iloc[0]
    ax.set_xlabel(f"p{obj.percentile:g} {label(lat)} (s)")
    ax.set_ylabel(f"mean {label(obj.quality)} (95% CI)")
    ax.set_title(f"Quality vs latency ({'down' if obj.lower_is_better else 'up'} and left is better)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    return fig


def pick_conversation(df: pd.DataFrame) -> tuple[str, str]:
    """A conversation worth drawing: the longest one, voice mode first; returns (conversation_id, mode)."""
    mode = "voice" if (df["mode"] == "voice").any() else str(df["mode"].iloc[0])
    d = df[df["mode"] == mode]
    turns = (
        d.groupby("conversation_id", observed=True)["turn_index"].nunique().sort_values(ascending=False, kind="stable")
    )
    return str(turns.index[0]), mode


def waterfall(
    df: pd.DataFrame,
    conversation_id: str | None = None,
    *,
    mode: str | None = None,
    repetition: int | None = None,
    strategies: list[str] | None = None,
) -> Figure:
    """One conversation's turns on a time line: user speech, each critical-path stage, agent audio.

    One row per strategy and turn; x is seconds since the conversation's first turn started
    (``started_at``), so gaps between turns show. Text turns show the LLM request only.
    """
    if conversation_id is None:
        conversation_id, auto_mode = pick_conversation(df)
        mode = mode or auto_mode
    d = df[df["conversation_id"] == conversation_id]
    if mode is not None:
        d = d[d["mode"] == mode]
    if repetition is None and not d.empty:
        repetition = int(d["repetition"].min())
    d = d[d["repetition"] == repetition]
    if strategies:
        d = d[d["strategy"].isin(strategies)]
    rows = d.sort_values(["strategy", "turn_index"], kind="stable")
    fig = Figure(figsize=(9.5, 0.42 * max(1, len(rows)) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    if rows.empty:
        return _empty(fig, ax, f"no turns for conversation {conversation_id}")
    starts = pd.to_datetime(rows["started_at"], errors="coerce", utc=True)
    origin = starts.min()
    used: set[str] = set()
    labels = []

    def bar(y: int, x0: float, w: float, key: str, label: str, height: float = 0.6) -> None:
        if not (isinstance(w, float) and math.isnan(w)) and w > 0:
            ax.barh(
                y,
                w,
                left=x0,
                height=height,
                color=STAGE_COLORS[key],
                edgecolor="white",
                label=None if key in used else label,
            )
            used.add(key)

    def num(v: Any) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return math.nan
        return f

    cursor = 0.0
    for y, (_, r) in enumerate(rows.iterrows()):
        t0 = (starts.loc[r.name] - origin).total_seconds() if pd.notna(starts.loc[r.name]) else cursor
        labels.append(f"{r['strategy']} t{int(r['turn_index'])}")
        if r["mode"] == "voice" and not math.isnan(num(r.get("speech_end_s"))):
            end = t0 + num(r["speech_end_s"])
            bar(y, t0, num(r["speech_end_s"]), "speech", "user speech")
            path = critical_path(r.to_dict())
            v2v = num(r.get("v2v_s"))
            if path is None:  # no reply was played: what was measured, from the end of speech
                bar(y, end, num(r.get("eou_delay_s")), "eou_delay_s", label("eou_delay_s"))
            else:
                x = end
                for name in SLICES:  # the critical path, stage after stage, up to the first frame played
                    bar(y, x, path[name], name, stage_label(name))
                    x += path[name]
                bar(y, end + v2v, num(r.get("agent_audio_s")), "agent_audio", "agent speaking")
                ax.plot([end + v2v], [y], marker="|", ms=12, color="black")
                ax.text(end + v2v, y - 0.38, f"{v2v:.2f}s", fontsize=7, ha="center")
            audio = num(r.get("agent_audio_s"))
            cursor = end + (0.0 if math.isnan(v2v) else v2v) + (0.0 if math.isnan(audio) else audio)
        else:
            ttfc, total = num(r.get("llm_ttfc_s")), num(r.get("llm_total_s"))
            bar(y, t0, ttfc, "llm_ttfc_s", label("llm_ttfc_s"))
            if not math.isnan(total):
                bar(
                    y,
                    t0 + (ttfc if not math.isnan(ttfc) else 0.0),
                    total - (ttfc if not math.isnan(ttfc) else 0.0),
                    "llm_rest",
                    "LLM rest of answer",
                )
            cursor = t0 + (total if not math.isnan(total) else 0.0)
    ax.set_yticks(np.arange(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the conversation started")
    ax.set_title(f"Conversation {conversation_id} ({mode or 'all modes'}, repetition {repetition})")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=4)
    ax.grid(axis="x", alpha=0.25)
    return fig


def figure_data_uri(fig: Figure, fmt: str = "png", dpi: int = 110) -> str:
    """The figure as a ``data:`` URI (PNG or SVG), for self-contained HTML."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    mime = "image/svg+xml" if fmt == "svg" else f"image/{fmt}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"
