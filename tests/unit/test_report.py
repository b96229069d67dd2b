"""The HTML report: every plot inline, tables, worst turns with transcripts and playable audio, and reasons."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from workbench.analysis.plots import stage_breakdown, stage_means
from workbench.analysis.report import PLOT_IDS, _audio_tag, build_report
from workbench.analysis.synthetic import synthetic_run
from workbench.core.schema import COLUMNS, KEY
from workbench.core.store import RunStore
from workbench.scoring.persist import write_scores

SCORE_COLS = ["fact_recall", "semantic_similarity", "rouge_l"]
NO_JUDGE = "no judge endpoint configured (score with --judge-endpoint NAME to add these columns)"


def store_run(
    runs: Path, run_id: str, df: pd.DataFrame, dataset: Path, scored: bool = True, **manifest_extra: Any
) -> Path:
    """A real run folder: schema columns as turn rows, score columns in scores.parquet with their record."""
    store = RunStore(runs / run_id)
    manifest = {
        "run_id": run_id,
        "name": f"test {run_id}",
        "status": "complete",
        "dataset": str(dataset),
        "suite": {"baseline": "plain"},
        "workbench_config": {"llm": {"kind": "local", "gguf": "smollm2"}},
        "versions": {"livekit-agents": "1.8.6"},
        "git_commit": "abc123",
        **manifest_extra,
    }
    store.write_manifest(manifest)
    for r in df[[c for c in COLUMNS if c in df.columns]].to_dict("records"):
        store.append(dict(r, run_id=run_id))
    store.compact()
    store.close()
    if scored:
        write_scores(
            runs / run_id,
            df,
            {
                "scorers": [
                    {"name": "facts", "status": "ok", "columns": ["fact_recall"], "reason": None, "seconds": 0.1},
                    {
                        "name": "semantic",
                        "status": "ok",
                        "columns": ["semantic_similarity"],
                        "reason": None,
                        "seconds": 0.1,
                    },
                    {"name": "ragas_text", "status": "ok", "columns": ["rouge_l"], "reason": None, "seconds": 0.1},
                    {"name": "ragas_llm", "status": "skipped", "columns": [], "reason": NO_JUDGE, "seconds": 0.0},
                    {"name": "livekit_judges", "status": "skipped", "columns": [], "reason": NO_JUDGE, "seconds": 0.0},
                ]
            },
        )
    return runs / run_id


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    dataset = root / "dataset"
    df = synthetic_run(conversations=4, turns=2, repetitions=2, seed=2)
    worst = df.index[(df["mode"] == "voice") & (df["strategy"] == "rag")][0]
    df.loc[worst, ["fact_recall", "semantic_similarity", "rouge_l"]] = 0.0
    df.loc[worst, ["answer", "transcript", "error_kind"]] = ["<script>alert(1)</script>", "what time you open", None]
    for rel in df.loc[df["mode"] == "voice", "audio_path"].unique():
        p = dataset / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(0.25 * 16000)) / 16000
        sf.write(p, 0.2 * np.sin(2 * np.pi * 440 * t), 16000)
    runs = root / "runs"
    store_run(runs, "this", df, dataset)
    slower = df.copy()
    slower["llm_ttfc_s"] *= 1.4
    slower["llm_total_s"] *= 1.4
    store_run(runs, "older", slower, dataset)
    store_run(runs, "unscored", df, dataset, scored=False)
    out = build_report("this", vs="older", runs_dir=runs, out=root / "report.html")
    return {"html": out.read_text(), "path": out, "df": df, "worst": df.loc[worst], "runs": runs, "dataset": dataset}


def test_every_plot_is_an_inline_png(env: dict[str, Any]) -> None:
    html = env["html"]
    for pid in PLOT_IDS:
        m = re.search(rf'<figure id="{pid}"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
        assert m, pid
        png = base64.b64decode(m.group(1))
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, pid


def test_report_is_self_contained(env: dict[str, Any]) -> None:
    html = env["html"]
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<script" not in html.replace("&lt;script&gt;", "")  # the hostile answer is escaped, not run
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_tables_and_sections_are_there(env: dict[str, Any]) -> None:
    html = env["html"]
    for anchor in ("leaderboard", "latency", "quality", "paired", "pass-rate", "waterfall", "worst-turns", "vs-run"):
        assert f"id='{anchor}'" in html, anchor
    assert html.count("<table") >= 7
    assert "Wilcoxon signed-rank" in html and "pass_all_reps" in html
    assert "abc123" in html and "smollm2" in html


def test_worst_turn_shows_transcript_and_plays_its_audio(env: dict[str, Any]) -> None:
    html, worst = env["html"], env["worst"]
    section = html.split("id='worst-turns'")[1]
    first = section.split('<div class="turn">')[1]
    assert "rag" in first and "voice" in first and "what time you open" in first
    m = re.search(r'<audio controls preload="metadata" src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', first)
    assert m
    assert base64.b64decode(m.group(1)) == (env["dataset"] / worst["audio_path"]).read_bytes()
    assert 'class="bad">8 am' in first or 'class="bad">' in first  # missed facts are marked


def test_absent_judge_columns_are_explained(env: dict[str, Any]) -> None:
    html = env["html"]
    note = html.split('id="judge-absent"')[1].split("</p>")[0]
    assert "faithfulness" in note and "--judge-endpoint" in note


def test_vs_other_run_pairs_the_same_strategies(env: dict[str, Any]) -> None:
    section = env["html"].split("id='vs-run'")[1]
    assert "older" in section
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("id='worst-turns'")[0], re.S)
    ttfc = [r for r in rows if "<td>llm_ttfc_s</td>" in r]
    assert len(ttfc) == 2  # plain and rag
    assert all("better" in r for r in ttfc)  # this run is faster on the very same turns


def test_audio_never_leaves_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    ds = tmp_path / "ds"
    ds.mkdir()
    assert "leaves the dataset" in _audio_tag(ds, "../secret.wav", 10_000)
    assert "not found" in _audio_tag(ds, "audio/missing.wav", 10_000)
    assert "<audio" not in _audio_tag(None, "audio/x.wav", 10_000)


def test_cli_report_on_an_unscored_run_says_so_and_still_reports_pass_rates(
    env: dict[str, Any], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    out = tmp_path / "cli.html"
    args = [
        "report",
        "unscored",
        "--runs-dir",
        str(env["runs"]),
        "--out",
        str(out),
        "--objective",
        "fact_recall@v2v_s:p90<=1.5",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "has not been scored" in html and "id='pass-rate'" in html
    assert "p90 v2v_s &lt;= 1.5 s" in html
    res = CliRunner().invoke(app, ["report", "missing", "--runs-dir", str(env["runs"])])
    assert res.exit_code == 2 and "no run" in res.output


def test_scores_are_joined_on_the_key(env: dict[str, Any]) -> None:
    stored = pd.read_parquet(env["runs"] / "this" / "scores.parquet")
    assert list(stored.columns[: len(KEY)]) == list(KEY)
    assert set(SCORE_COLS) <= set(stored.columns)


def test_runs_on_the_same_stack_get_no_version_banner(env: dict[str, Any]) -> None:
    assert "id='version-mismatch'" not in env["html"]
    assert "livekit-agents 1.8.6" in env["html"]  # the header shows the versions


def test_runs_measured_on_different_stacks_get_a_banner_listing_the_differences(
    env: dict[str, Any], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    df = synthetic_run(conversations=2, turns=2, repetitions=1, seed=3)
    runs = tmp_path / "runs"
    old = {"livekit-agents": "1.8.6", "openai": "2.54.0", "livekit-plugins-openai": "1.8.6", "pandas": "2.2.0"}
    new = {"livekit-agents": "1.8.9", "openai": "3.63.0", "livekit-plugins-openai": "1.8.9", "pandas": "2.3.0"}
    llm = {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "b179c9523d0e" + "0" * 52}
    stt = {"file": "model.bin", "sha256": "5" * 64}
    store_run(runs, "new", df, env["dataset"], versions=new, models={"llm": llm, "stt": stt})
    store_run(
        runs,
        "old",
        df,
        env["dataset"],
        versions=old,
        models={"llm": {**llm, "sha256": "1d9614638d18" + "0" * 52}, "stt": stt},
    )
    out = tmp_path / "vs.html"
    res = CliRunner().invoke(
        app, ["report", "new", "--vs", "old", "--runs-dir", str(runs), "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    html = out.read_text()
    banner = html.split("id='version-mismatch'")[1].split("</div>")[0]
    assert html.index("id='version-mismatch'") < html.index("id='leaderboard'")  # at the top, not buried
    items = re.findall(r"<li>(.*?)</li>", banner)
    assert items == [
        "package livekit-agents: this run 1.8.9, old 1.8.6",
        "package livekit-plugins-openai: this run 1.8.9, old 1.8.6",
        "package openai: this run 3.63.0, old 2.54.0",
        "model llm: this run SmolLM2-135M-Instruct.Q4_1.gguf sha256 b179c9523d0e, "
        "old SmolLM2-135M-Instruct.Q4_1.gguf sha256 1d9614638d18",
    ]  # pandas differs too, but it is not part of the measured stack; stt is the same file
    assert "different stacks (see the warning at the top)" in html.split("id='vs-run'")[1]
    assert "livekit-agents 1.8.9" in html and "stt model.bin sha256 <code>555555555555</code>" in html
    assert "warning: new and old were measured on different stacks" in res.stdout
    assert "package openai: new 3.63.0, old 2.54.0" in res.stdout


def _bar_totals(fig: Any) -> tuple[dict[int, float], list[str]]:
    """The stacked bars' total width per row, and the legend's labels."""
    ax = fig.axes[0]
    totals: dict[int, float] = {}
    for patch in ax.patches:
        row = round(patch.get_y() + patch.get_height() / 2)
        totals[row] = totals.get(row, 0.0) + patch.get_width()
    return totals, [t.get_text() for t in ax.get_legend().get_texts()]


def test_where_the_time_goes_names_every_stage_and_the_stages_add_up_to_voice_to_voice(env: dict[str, Any]) -> None:
    df = env["df"]
    totals, labels = _bar_totals(stage_breakdown(df))
    assert labels == [
        "STT final",
        "end of turn (after the transcript)",
        "LLM request start",
        "LLM first chunk",
        "LLM first sentence (after the first chunk)",
        "TTS first audio",
        "playout start",
    ]  # every stage measured: no unattributed slice, and no "other"
    voice = df[df["mode"] == "voice"]
    for i, s in enumerate(dict.fromkeys(df["strategy"])):
        assert totals[i] == pytest.approx(voice.loc[voice["strategy"] == s, "v2v_s"].mean(), abs=0.002), s
    section = env["html"].split("id='latency'")[1].split("id='quality'")[0]
    assert "LLM first sentence (after the first chunk)" in section and "voice to voice (mean)" in section


def test_a_run_recorded_before_the_stage_columns_shows_its_unmeasured_time_as_unattributed(
    env: dict[str, Any],
) -> None:
    old = env["df"].drop(columns=["llm_start_s", "llm_ttfs_s", "playout_s", "unattributed_s"])
    totals, labels = _bar_totals(stage_breakdown(old))
    assert labels[-1] == "unattributed (stages not measured)" and "LLM request start" not in labels
    means = stage_means(old).set_index("strategy")
    assert means["unattributed_s"].to_numpy() == pytest.approx(0.05)  # what the synthetic rows leave out
    voice = old[old["mode"] == "voice"]
    for i, s in enumerate(dict.fromkeys(old["strategy"])):
        assert totals[i] == pytest.approx(voice.loc[voice["strategy"] == s, "v2v_s"].mean(), abs=0.002), s
