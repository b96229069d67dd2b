"""The report as a person sees it: a stored run, scored with the real scorers (MiniLM included), rendered to HTML
and opened in headless Chromium. The screenshot is kept as a test artefact in ``.workbench/artifacts/``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from workbench.analysis.report import PLOT_IDS, build_report
from workbench.analysis.synthetic import Profile, synthetic_run
from workbench.core.schema import COLUMNS
from workbench.core.store import RunStore
from workbench.scoring.persist import load_scored, score_run_folder

ARTIFACTS = Path(__file__).resolve().parents[2] / ".workbench" / "artifacts"


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def speak(text: str, path: Path) -> None:
    """Real speech with espeak-ng when it is installed (it is the project's second voice), else a tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    espeak = shutil.which("espeak-ng")
    if espeak:
        subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True, timeout=30)
        return
    t = np.arange(int(0.5 * 16000)) / 16000
    sf.write(path, 0.2 * np.sin(2 * np.pi * 300 * t), 16000)


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory, stack: Any) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("browser")
    dataset = root / "dataset"
    knowledge = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo" / "knowledge"
    shutil.copytree(knowledge, dataset / "knowledge")
    df = synthetic_run(
        {"plain": Profile(), "rag": Profile(ttfc_s=0.6, total_s=1.5, skill=0.85)},
        conversations=4,
        turns=2,
        repetitions=2,
        seed=5,
    )
    # the rag strategy retrieves the right document's opening, as a retriever would
    is_rag = (df["strategy"] == "rag").tolist()
    refs = df["reference_contexts"].tolist()
    df["context_sources"] = [list(r) if rag else [] for rag, r in zip(is_rag, refs, strict=True)]
    df["contexts"] = [[(dataset / r[0]).read_text()[:300]] if rag else [] for rag, r in zip(is_rag, refs, strict=True)]
    for rel, text in df.loc[df["mode"] == "voice", ["audio_path", "user_text"]].drop_duplicates("audio_path").values:
        speak(text, dataset / rel)
    runs = root / "runs"
    store = RunStore(runs / "browser-run")
    store.write_manifest(
        {"run_id": "browser-run", "name": "browser test", "status": "complete", "dataset": str(dataset)}
    )
    for r in df[list(COLUMNS)].to_dict("records"):  # the runner's columns only: scores come from scoring
        store.append(r)
    store.compact()
    store.close()
    _, scoring = score_run_folder("browser-run", runs_dir=runs, stack=stack)
    assert {o["name"]: o["status"] for o in scoring["scorers"]} == {
        "ragas_text": "ok",
        "semantic": "ok",
        "facts": "ok",
        "wer": "ok",
        "retrieval": "ok",
        "ragas_llm": "skipped",
        "livekit_judges": "skipped",
        "faults": "skipped",  # no fault conversations
        "tool_call_accuracy": "skipped",  # no expected tool calls
        "tool_args_match": "skipped",
    }
    return runs, root


def test_scored_run_has_real_scores(scored_run: tuple[Path, Path]) -> None:
    runs, _ = scored_run
    df = load_scored("browser-run", runs).rows
    rag = df[df["strategy"] == "rag"]
    assert (rag["ctx_recall_id"] == 1.0).all() and (rag["ctx_recall_text"] == 1.0).all()
    assert df[df["strategy"] == "plain"]["ctx_recall_id"].isna().all()
    full = df[df["fact_recall"] == 1.0]
    assert (full["semantic_similarity"] > 0.99).all()  # full-recall synthetic answers are the reference itself
    assert df.loc[df["mode"] == "voice", "wer"].notna().all() and df.loc[df["mode"] == "text", "wer"].isna().all()


def test_report_renders_in_headless_chromium(scored_run: tuple[Path, Path]) -> None:
    runs, root = scored_run
    browser = chromium_binary()
    if browser is None:
        pytest.skip("chromium is not installed (make chromium, or apt-get install chromium)")
    report = build_report("browser-run", runs_dir=runs, out=root / "report.html")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={root / 'profile'}",
    ]
    proc = subprocess.run(
        [*common, "--window-size=1280,7000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for pid in PLOT_IDS:
        assert f'id="{pid}"' in dom.stdout, pid
    assert "<audio" in dom.stdout and 'id="judge-absent"' in dom.stdout

    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (7000, 1280)
    top = img[:4000]
    assert (top < 200).mean() > 0.02  # text, tables and plots drawn, not a blank page
    assert top.std() > 20
    # the plots are rendered as images: rows of the page with many mid-grey/colour pixels exist
    assert ((top > 60) & (top < 230)).mean(axis=1).max() > 0.3
    (ARTIFACTS / "report.html").write_text(report.read_text())
