"""``workbench report``: one self-contained HTML file per run (plots, tables, worst turns, audio).

Everything is inline (plots as PNG data URIs, voice turns' audio as data URIs), so the file can
be mailed, attached to a CI run or opened years later without the run folder. Every table comes
from :func:`workbench.analysis.compare.compare`; every absent score column is explained from the
scoring record (``scores.json``), never left silently blank.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.analysis import plots
from workbench.analysis.compare import LATENCY_COLUMNS, Comparison, Objective, compare, ensure_fact_recall, passed
from workbench.analysis.stats import score_columns
from workbench.core.cells import as_list, as_text
from workbench.core.io import atomic_write_text
from workbench.core.run import REPORT_FILE, RunFolder
from workbench.core.schema import SLICES
from workbench.models.versions import stack_differences
from workbench.scoring.facts import missed_facts
from workbench.scoring.judge import judged_columns
from workbench.scoring.persist import load_scored

AUDIO_MIME = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
}
PLOT_IDS = ("plot-quality-latency", "plot-latency-ecdf", "plot-stage-breakdown", "plot-waterfall")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:.92em}.meta code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;font-size:.85em;margin:10px 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{color:#1a7f37;font-weight:600}td.worse{color:#b42318;font-weight:600}
figure{margin:14px 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:10px 0}
.ok{color:#1a7f37}.bad{color:#b42318}
.warn{background:#fdecea;border-left:4px solid #b42318;padding:8px 12px;margin:10px 0}.warn ul{margin:4px 0}
.turn{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:12px 0}
.turn h3{margin:0 0 6px 0;font-size:1em}.turn dl{display:grid;grid-template-columns:140px 1fr;gap:3px 10px;margin:0}
.turn dt{color:#666}.turn dd{margin:0;white-space:pre-wrap}audio{height:32px}
"""


def _esc(v: Any) -> str:
    return html.escape(as_text(v))


def _cell(v: Any, digits: int) -> tuple[str, bool]:
    """(text, is_number) for one table cell."""
    if isinstance(v, bool | np.bool_):
        return ("yes" if v else "no"), False
    if isinstance(v, int | np.integer):
        return str(v), True
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "–", True
        if v != 0 and abs(v) < 10 ** (-digits):
            return f"{v:.1e}", True
        return f"{v:.{digits}f}", True
    return as_text(v), False


def _table(df: pd.DataFrame | None, digits: int = 3, classes: dict[str, Callable[[Any], str]] | None = None) -> str:
    """A DataFrame as an HTML table: numbers right-aligned, text left, everything escaped.

    ``classes`` maps a column to a function giving a CSS class for a cell (e.g. verdict colours).
    """
    if df is None or df.empty:
        return "<p><em>(no rows)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            text, num = _cell(v, digits)
            cls = ["num"] if num else []
            if classes and col in classes:
                cls.append(classes[col](v))
            attr = f' class="{" ".join(c for c in cls if c)}"' if any(cls) else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(fig_id: str, fig: Any, caption: str) -> str:
    uri = plots.figure_data_uri(fig, "png", dpi=100)
    return (
        f'<figure id="{fig_id}"><img alt="{html.escape(caption)}" src="{uri}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _quality_wide(c: Comparison) -> pd.DataFrame:
    """Strategy x metric as 'mean [low, high]' (95% item-bootstrap interval)."""
    q = c.quality
    if q.empty:
        return q
    q = q.assign(
        cell=[
            "–" if math.isnan(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
            for m, lo, hi in zip(q["mean"], q["ci_low"], q["ci_high"], strict=True)
        ]
    )
    wide = q.pivot_table(index=["strategy", "mode"], columns="metric", values="cell", aggfunc="first", sort=False)
    order = [m for m in dict.fromkeys(q["metric"]) if m in wide.columns]
    wide = wide[order].reset_index()
    wide.columns.name = None
    return wide


def _paired_view(p: pd.DataFrame) -> pd.DataFrame:
    """The paired table, verdict first; the baseline is named in the section title."""
    if p.empty:
        return p
    cols = [
        "strategy",
        "metric",
        "verdict",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_holm",
        "baseline_mean",
        "strategy_mean",
        "items",
        "p_value",
    ]
    return p[[c for c in cols if c in p.columns]].rename(
        columns={"mean_diff": "diff", "ci_low": "diff_ci_low", "ci_high": "diff_ci_high"}
    )


def _verdict_class(v: Any) -> str:
    return {"better": "better", "worse": "worse"}.get(str(v), "")


def _latency_view(lat: pd.DataFrame) -> pd.DataFrame:
    """One 'p50 / p90 / p95' cell per latency column, so the table fits a page."""
    if lat.empty:
        return lat
    out = lat[["strategy", "mode", "turns"]].copy()
    for c in LATENCY_COLUMNS:
        if f"{c}_p50" not in lat:
            continue
        out[f"{c} p50 / p90 / p95"] = [
            "–" if math.isnan(a) else f"{a:.3f} / {b:.3f} / {d:.3f}"
            for a, b, d in zip(lat[f"{c}_p50"], lat[f"{c}_p90"], lat[f"{c}_p95"], strict=True)
        ]
    return out


def _stage_table(df: pd.DataFrame) -> str:
    """The breakdown's numbers: mean seconds per stage and strategy, voice turns only (nothing without them)."""
    means = plots.stage_means(df)
    if means.empty:
        return ""
    view = means.rename(columns={c: plots.stage_label(c) for c in SLICES} | {"v2v_mean": "voice to voice (mean)"})
    view = view.rename(columns={"v2v_p50": "voice to voice (p50)"})
    return "<p>Mean seconds per stage (voice turns); the stages add up to the mean voice to voice.</p>" + _table(
        view, digits=3
    )


def _audio_tag(dataset: Path | None, rel: Any, max_bytes: int) -> str:
    rel_s = as_text(rel)
    if not rel_s:
        return ""
    if dataset is None:
        return "<em>audio not embedded: the run manifest names no dataset</em>"
    root = dataset.resolve()
    p = (root / rel_s).resolve()
    if not p.is_relative_to(root):
        return f"<em>audio path {html.escape(rel_s)} leaves the dataset: not embedded</em>"
    if not p.is_file():
        return f"<em>audio file {html.escape(rel_s)} not found under {html.escape(str(dataset))}</em>"
    size = p.stat().st_size
    if size > max_bytes:
        return f"<em>audio {html.escape(rel_s)} is {size / 1e6:.1f} MB (over the {max_bytes / 1e6:.1f} MB cap)</em>"
    mime = AUDIO_MIME.get(p.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(p.read_bytes()).decode()
    player = f'<audio controls preload="metadata" src="data:{mime};base64,{data}"></audio>'
    return f"{player} <code>{html.escape(rel_s)}</code>"


def _call_spans(df: pd.DataFrame) -> dict[tuple[str, float], float | None]:
    """(call recording, turn offset) -> where the next turn of that call starts (None: the call's end)."""
    if "call_audio" not in df.columns or "call_offset_s" not in df.columns:
        return {}
    spans: dict[tuple[str, float], float | None] = {}
    calls = df[["call_audio", "call_offset_s"]].dropna().drop_duplicates()
    for rel, offsets in calls.groupby("call_audio")["call_offset_s"]:
        ordered = sorted(float(o) for o in offsets)
        for start, end in zip(ordered, [*ordered[1:], None], strict=True):
            spans[(str(rel), start)] = end
    return spans


def _call_tag(run_path: Path | None, r: pd.Series, spans: dict[tuple[str, float], float | None], max_bytes: int) -> str:
    """The turn's stretch of the call recording (caller left, agent right) as an embedded player.

    Only the turn's own stretch is embedded: a whole call per card would repeat the same long file.
    """
    rel_s, offset = as_text(r.get("call_audio")), r.get("call_offset_s")
    if not rel_s or offset is None or pd.isna(offset) or run_path is None:
        return ""
    root = run_path.resolve()
    p = (root / rel_s).resolve()
    if not p.is_relative_to(root) or not p.is_file():
        return f"<em>call recording {html.escape(rel_s)} not found in the run folder</em>"
    import soundfile as sf  # only reports of voice runs read audio

    start = float(offset)
    end = spans.get((rel_s, start))
    with sf.SoundFile(p) as f:
        rate = f.samplerate
        f.seek(min(int(start * rate), f.frames))
        frames = -1 if end is None else max(0, int((end - start) * rate))
        audio = f.read(frames, dtype="int16", always_2d=True)
    if audio.size * 2 > max_bytes:
        return f"<em>the turn's stretch of {html.escape(rel_s)} is over the {max_bytes / 1e6:.1f} MB cap</em>"
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="PCM_16")
    data = base64.b64encode(buf.getvalue()).decode()
    until = f"{end:.2f}" if end is not None else "end"
    return (
        f'<audio controls preload="metadata" src="data:audio/wav;base64,{data}"></audio> '
        f"<code>{html.escape(rel_s)}</code> {start:.2f}-{until} s (caller left, agent right)"
    )


def worst_turns(df: pd.DataFrame, n: int = 8, pass_threshold: float = 1.0) -> pd.DataFrame:
    """Failing turns first, then the lowest fact recall, semantic similarity and ROUGE-L."""
    d = ensure_fact_recall(df).copy()
    d["_pass"] = passed(d, pass_threshold)
    keys = ["_pass", "fact_recall"] + [c for c in ("semantic_similarity", "rouge_l") if c in d.columns]
    d = d.sort_values(keys, ascending=True, na_position="last", kind="stable")
    # one card per strategy and turn: repetitions of the same failure say nothing new
    return d.drop_duplicates(["strategy", "mode", "voice", "conversation_id", "turn_index"]).head(n)


def _turn_card(
    r: pd.Series,
    shown: Sequence[str],
    dataset: Path | None,
    max_audio: int,
    run_path: Path | None = None,
    spans: dict[tuple[str, float], float | None] | None = None,
) -> str:
    """One turn as a card; ``shown``: the score and latency columns to list."""
    items: list[tuple[str, str]] = [
        ("user said", _esc(r.get("user_text"))),
    ]
    if as_text(r.get("mode")) == "voice":
        items.append(("STT heard", _esc(r.get("transcript"))))
        items.append(("audio", _audio_tag(dataset, r.get("audio_path"), max_audio)))
        if call := _call_tag(run_path, r, spans or {}, max_audio):
            items.append(("call as heard", call))
    items += [
        ("answer", _esc(r.get("answer")) or "<em>(empty)</em>"),
        ("reference", _esc(r.get("reference"))),
    ]
    facts = [str(f) for f in as_list(r.get("facts"))]
    if facts:
        raw = r.get("facts_missed")
        if isinstance(raw, list | tuple | np.ndarray):
            missed = [str(f) for f in raw]
        else:  # unscored row (or scored before it existed): work it out here
            missed = missed_facts(facts, as_text(r.get("answer")))
        items.append(
            (
                "facts",
                ", ".join(f'<span class="{"bad" if f in missed else "ok"}">{html.escape(f)}</span>' for f in facts),
            )
        )
    if as_text(r.get("error_kind")):
        items.append(("error", f'<span class="bad">{_esc(r.get("error_kind"))}: {_esc(r.get("error"))}</span>'))
    srcs = [str(s) for s in as_list(r.get("context_sources"))]
    if srcs:
        items.append(("retrieved", html.escape(", ".join(srcs))))
    nums = []
    for c in shown:
        v = r.get(c)
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA:
            nums.append(f"{c} {float(v):.3f}")
    items.append(("scores", html.escape(", ".join(nums))))
    title = (
        f"{_esc(r['strategy'])} · {_esc(r['conversation_id'])} turn {int(r['turn_index'])} · "
        f"{_esc(r['mode'])}{' / ' + _esc(r['voice']) if as_text(r.get('voice')) else ''} · "
        f"repetition {int(r['repetition'])} · {'pass' if r['_pass'] else 'fail'}"
    )
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<div class="turn"><h3>{title}</h3><dl>{body}</dl></div>'


def _scoring_section(scored: RunFolder) -> str:
    meta = scored.scoring
    parts = ["<h2>Scoring</h2>"]
    judged = judged_columns()
    present_judge = [c for c in judged if c in scored.rows.columns and scored.rows[c].notna().any()]
    if not meta:
        parts.append(
            '<p class="note">This run has not been scored (<code>workbench score RUN</code>): fact recall was '
            "computed on the fly for the pass rate; text similarity, retrieval and judge scores are absent.</p>"
        )
        return "".join(parts)
    rows = pd.DataFrame(
        [
            {
                "scorer": s["name"],
                "status": s["status"],
                "columns": ", ".join(s.get("columns") or []) or "–",
                "note": s.get("reason") or "",
            }
            for s in meta.get("scorers", [])
        ]
    )
    parts.append(f"<p class='meta'>scored at {html.escape(str(meta.get('scored_at', '?')))}</p>")
    parts.append(_table(rows))
    judge = meta.get("judge")
    if judge:
        parts.append(
            f"<p class='meta'>judge: <code>{html.escape(str(judge.get('model')))}</code> on endpoint "
            f"<code>{html.escape(str(judge.get('endpoint')))}</code>; cache hits {judge.get('cache_hits')}, "
            f"calls made {judge.get('cache_misses')}</p>"
        )
    if not present_judge:
        judge_scorers = ("ragas_llm", "livekit_judges")
        reasons = {s["name"]: s.get("reason") for s in meta.get("scorers", []) if s["name"] in judge_scorers}
        why = "; ".join(f"{k}: {v}" for k, v in reasons.items() if v) or "the judge scorers were not run"
        parts.append(
            f'<p class="note" id="judge-absent">LLM-judge columns ({", ".join(judged)}) are absent: '
            f"{html.escape(why)}.</p>"
        )
    return "".join(parts)


def _header(scored: RunFolder) -> str:
    m = scored.manifest
    df = scored.rows
    llm = (m.get("workbench_config") or {}).get("llm") or {}
    model = llm.get("model") or llm.get("gguf") or "?"
    versions = m.get("versions") or {}
    commit = m.get("git_commit")
    rows_text = (
        f"{len(df)} turns; strategies {', '.join(map(_esc, dict.fromkeys(df['strategy'])))}; "
        f"modes {', '.join(map(_esc, dict.fromkeys(df['mode'])))}; repetitions {df['repetition'].nunique()}"
    )
    facts = [
        ("run", f"<code>{_esc(scored.run_id)}</code> ({_esc(m.get('status', '?'))})"),
        ("created", _esc(m.get("created_at", "?"))),
        ("dataset", f"<code>{_esc(m.get('dataset', '?'))}</code>"),
        ("rows", rows_text),
        ("LLM", f"<code>{_esc(model)}</code> ({_esc(llm.get('kind', '?'))})"),
        ("versions", ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in versions.items()) or "?"),
        ("models", _models_text(m.get("models"))),
        ("commit", f"<code>{_esc(commit or '?')}</code>" + (" (uncommitted changes)" if m.get("git_dirty") else "")),
    ]
    rows = "".join(f"<tr><th>{k}</th><td style='text-align:left'>{v}</td></tr>" for k, v in facts)
    return f"<h1>DianaChat Workbench report: {_esc(m.get('name') or scored.run_id)}</h1><table>{rows}</table>"


def _models_text(models: Any) -> str:
    """``role file sha256 (12 hex)`` per model file the run recorded; older runs recorded none."""
    if not isinstance(models, dict) or not models:
        return "not recorded"
    parts = []
    for role, rec in models.items():
        rec = rec if isinstance(rec, dict) else {}
        digest = f"sha256 <code>{_esc(str(rec['sha256'])[:12])}</code>" if rec.get("sha256") else "no hash"
        why = f" ({_esc(rec.get('error') or rec.get('note'))})" if rec.get("error") or rec.get("note") else ""
        parts.append(f"{_esc(role)} {_esc(rec.get('file') or rec.get('gguf') or '?')} {digest}{why}")
    return "; ".join(parts)


def _stack_banner(this: RunFolder, other: RunFolder) -> str:
    """A warning when the compared runs were measured on different stacks: their differences may not be the
    strategies' but LiveKit's, the OpenAI client's or a model file's. Empty when the stacks match."""
    diffs = stack_differences(this.manifest, other.manifest)
    if not diffs:
        return ""
    items = "".join(f"<li>{_esc(d.describe('this run', other.run_id))}</li>" for d in diffs)
    return (
        f"<div class='warn' id='version-mismatch'><strong>This run and <code>{_esc(other.run_id)}</code> were "
        f"measured on different stacks</strong>: differences between them may come from these, not from the "
        f"strategies.<ul>{items}</ul></div>"
    )


def _default_baseline(scored: RunFolder) -> str | None:
    strategies = list(dict.fromkeys(scored.rows["strategy"].astype(str)))
    suite_base = (scored.manifest.get("suite") or {}).get("baseline")
    for b in (suite_base, "plain"):
        if b in strategies:
            return b
    return strategies[0] if strategies else None


def _vs_section(this: RunFolder, other: RunFolder, objective: Objective, pass_threshold: float, seed: int) -> str:
    parts = [f"<h2 id='vs-run'>This run vs <code>{_esc(other.run_id)}</code></h2>"]
    common = [s for s in dict.fromkeys(this.rows["strategy"]) if s in set(other.rows["strategy"])]
    if not common:
        return "".join(parts) + "<p class='note'>No strategy name appears in both runs: nothing to pair.</p>"
    rows = []
    for s in common:
        # each side gets its fact recall on its own (an unscored run next to a scored one)
        a = ensure_fact_recall(this.rows[this.rows["strategy"] == s]).assign(strategy="this run")
        b = ensure_fact_recall(other.rows[other.rows["strategy"] == s]).assign(strategy="other run")
        try:
            c = compare(
                pd.concat([a, b], ignore_index=True),
                baseline="other run",
                objective=objective,
                pass_threshold=pass_threshold,
                seed=seed,
            )
        except (KeyError, ValueError) as e:
            parts.append(f"<p class='note'>{_esc(s)}: {_esc(e)}</p>")
            continue
        if not c.paired.empty:
            rows.append(c.paired.assign(strategy=s, baseline=other.run_id))
    parts.append(
        "<p>Paired on (conversation, turn, repetition, mode, voice); differences are this run minus the other; "
        "Wilcoxon signed-rank on per-turn means over repetitions.</p>"
    )
    if stack_differences(this.manifest, other.manifest):
        parts.append(
            "<p class='note'>The two runs were measured on different stacks (see the warning at the top): these "
            "differences mix the strategies' effect with the versions' or model files'.</p>"
        )
    table = _paired_view(pd.concat(rows, ignore_index=True)) if rows else pd.DataFrame()
    parts.append(_table(table, classes={"verdict": _verdict_class}))
    return "".join(parts)


def render_report(
    scored: RunFolder,
    *,
    other: RunFolder | None = None,
    baseline: str | None = None,
    objective: Objective | str | None = None,
    pass_threshold: float = 1.0,
    worst: int = 8,
    max_audio_bytes: int = 3_000_000,
    seed: int = 0,
) -> str:
    """The report as one HTML string."""
    df = scored.rows
    if df.empty:
        raise ValueError(f"run {scored.run_id} has no turn rows")
    baseline = baseline or _default_baseline(scored)
    c = compare(df, baseline=baseline, objective=objective, pass_threshold=pass_threshold, seed=seed)
    sections: list[str] = [_header(scored)]
    if other is not None:
        sections.append(_stack_banner(scored, other))
    for note in c.notes:
        sections.append(f"<p class='note'>{_esc(note)}</p>")

    def section(title: str, anchor: str, body: Callable[[], str]) -> None:
        sections.append(f"<h2 id='{anchor}'>{html.escape(title)}</h2>{body()}")

    section(
        "Leaderboard",
        "leaderboard",
        lambda: (
            f"<p>Objective: {_esc(c.objective.describe())}. Pass = no error and fact recall ≥ {pass_threshold:g} "
            f"(turns without must-mention facts pass when error-free). Baseline: <code>{_esc(c.baseline)}</code>.</p>"
            + _table(c.leaderboard)
            + _figure(
                "plot-quality-latency",
                plots.quality_latency(c),
                "Mean quality (95% CI over turns) vs latency percentile; dashed: the Pareto front.",
            )
        ),
    )
    section(
        "Latency",
        "latency",
        lambda: (
            "<p>Percentiles per strategy and mode, in seconds. Voice rows replayed faster than real time carry no "
            "latency figures.</p>"
            + _table(_latency_view(c.latency))
            + _figure(
                "plot-latency-ecdf",
                plots.latency_ecdf(df),
                "Empirical CDFs: the share of turns at or below each latency (dotted: p50 and p90).",
            )
            + _figure(
                "plot-stage-breakdown",
                plots.stage_breakdown(df),
                "Mean time of each critical-path stage per strategy, from the end of user speech to the first "
                "agent audio played: the stages add up to voice-to-voice (docs/latency.md says how each is "
                "measured; 'unattributed' is time of stages a row could not measure).",
            )
            + _stage_table(df)
        ),
    )
    section(
        "Quality",
        "quality",
        lambda: (
            "<p>Means with 95% bootstrap intervals (turns resampled, repetitions averaged within a turn).</p>"
            + _table(_quality_wide(c))
        ),
    )
    section(
        f"Paired differences vs {c.baseline}",
        "paired",
        lambda: (
            f"<p>{_esc(c.params['test'])}; significance at α = {c.params['alpha']:g}. diff = strategy − baseline; "
            "better or worse as each metric declares (for latency lower is better).</p>"
            + _table(_paired_view(c.paired), classes={"verdict": _verdict_class})
        ),
    )
    section(
        "Pass rate",
        "pass-rate",
        lambda: (
            "<p>rep_*: spread of the pass rate over repetitions; pass_all_reps: share of turns that passed in every "
            "repetition (consistency); pass_any_rep: in at least one.</p>" + _table(c.pass_rate)
        ),
    )
    conv, mode = plots.pick_conversation(df)
    section(
        "A conversation, turn by turn",
        "waterfall",
        lambda: _figure(
            "plot-waterfall",
            plots.waterfall(df, conv, mode=mode),
            f"Conversation {conv} ({mode}): each strategy's turns on a time line.",
        ),
    )
    sections.append(_scoring_section(scored))
    if other is not None:
        sections.append(_vs_section(scored, other, c.objective, pass_threshold, seed))
    worst_df = worst_turns(df, worst, pass_threshold)
    shown = [*score_columns(worst_df), *LATENCY_COLUMNS]
    spans = _call_spans(df)
    cards = "".join(
        _turn_card(r, shown, scored.dataset, max_audio_bytes, scored.path, spans) for _, r in worst_df.iterrows()
    )
    sections.append(f"<h2 id='worst-turns'>Worst {len(worst_df)} turns</h2>{cards}")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections.append(f"<p class='meta'>Generated {generated} by <code>workbench report</code>.</p>")
    title = html.escape(f"Workbench report {scored.run_id}")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>"
    )


def build_report(
    run: str | Path,
    *,
    vs: str | Path | None = None,
    out: str | Path | None = None,
    runs_dir: str | Path | None = None,
    **kwargs: Any,
) -> Path:
    """Write the report for ``run`` (default ``<run folder>/report.html``) and return its path."""
    scored = load_scored(run, runs_dir)
    other = load_scored(vs, runs_dir) if vs is not None else None
    text = render_report(scored, other=other, **kwargs)
    path = Path(out) if out is not None else scored.path / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


__all__ = ["PLOT_IDS", "build_report", "render_report", "worst_turns"]
