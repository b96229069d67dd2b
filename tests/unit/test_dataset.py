"""Dataset loading and validation: every problem kind with file/line/field; nothing leaves the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from workbench.cli import app
from workbench.replay.dataset import (
    DEFAULT_VARIANT,
    Conversation,
    DatasetError,
    DatasetProblem,
    load_dataset,
    validate_dataset,
)

DEMO = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo"


def conv(cid: str = "c1", **turn: object) -> dict:
    return {"id": cid, "tags": ["t"], "turns": [{"user": "Hello there?", "reference": "Hi.", **turn}]}


def make(root: Path, *lines: dict | str, wavs: tuple[str, ...] = (), docs: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    (root / "conversations.jsonl").write_text(text, encoding="utf-8")
    for rel in wavs:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, np.zeros(1600, np.float32), 16000)
    for rel in docs:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("doc")
    return root


def where(problems: list[DatasetProblem]) -> set[tuple[int | None, str | None]]:
    return {(p.line, p.field) for p in problems}


def test_demo_dataset_is_clean_and_fully_recorded() -> None:
    ds = load_dataset(DEMO, strict=True)
    assert len(ds.conversations) == 47 and sum(len(c.turns) for c in ds.conversations) == 103
    assert len(list(ds.knowledge_dir.glob("*.md"))) == 37
    assert validate_dataset(DEMO) == []
    for c in ds.conversations:
        assert {"piper", "espeak", "piper-8k"} <= c.variants()
        for t in c.turns:
            span = t.speech_span("piper")
            assert span is not None and span.speech_start_s == pytest.approx(0.3)
            assert span.duration_s == pytest.approx(span.speech_end_s + 0.8, abs=1e-3)
    noisy = [c.id for c in ds.conversations if "piper-noisy" in c.variants()]
    assert len(noisy) == 23 and "c001" in noisy


def test_good_lines_load_and_bad_lines_are_reported_with_line_and_field(tmp_path: Path) -> None:
    root = make(
        tmp_path / "ds",
        conv("c1"),
        "{not json",
        {"id": "c2", "turns": [{"reference": "no user"}]},  # missing field
        {"id": "c3", "tags": "oops", "turns": [{"user": 5, "facts": [1]}]},  # wrong types
        {"id": "c4", "turns": [{"user": "Hi", "refrence": "typo"}]},  # unknown field
        conv("c1"),  # duplicate id
        '["a list"]',
        {"id": "c5", "turns": []},
        {"id": "bad id!", "turns": [{"user": "Hi"}]},
        conv("c6"),
    )
    ds = load_dataset(root)
    assert [c.id for c in ds.conversations] == ["c1", "c6"]
    assert [c.line for c in ds.conversations] == [1, 10]
    got = {(p.line, p.field): p.message for p in ds.problems}
    assert got[(2, None)].startswith("invalid JSON")
    assert got[(3, "turns[0].user")] == "required field missing"
    assert "valid list" in got[(4, "tags")]
    assert "valid string" in got[(4, "turns[0].user")] and "valid string" in got[(4, "turns[0].facts[0]")]
    assert got[(5, "turns[0].refrence")] == "unknown field"
    assert got[(6, "id")] == "duplicate id 'c1' (first on line 1)"
    assert "JSON object" in got[(7, None)]
    assert "at least 1" in got[(8, "turns")]
    assert "pattern" in got[(9, "id")]
    assert all(p.file == "conversations.jsonl" for p in ds.problems)
    with pytest.raises(DatasetError, match="problem"):
        load_dataset(root, strict=True)


def test_bytes_that_are_not_utf8_cost_one_line(tmp_path: Path) -> None:
    root = make(tmp_path / "ds", conv("c1"))
    with (root / "conversations.jsonl").open("ab") as f:
        f.write(b'{"id": "c2", "turns": [{"user": "caf\xe9"}]}\n')
    ds = load_dataset(root)
    assert [c.id for c in ds.conversations] == ["c1"]
    assert where(ds.problems) == {(2, None)} and "UTF-8" in ds.problems[0].message


def test_audio_shapes_and_meta(tmp_path: Path) -> None:
    root = make(
        tmp_path / "ds",
        conv("plain", audio="audio/a.wav", audio_meta={"default": {"speech_start_s": 0.0, "speech_end_s": 0.1}}),
        conv("mapped", audio={"piper": "audio/a.wav"}, audio_meta={"espeak": {"speech_start_s": 0, "speech_end_s": 1}}),
        conv("backwards", audio="audio/a.wav", audio_meta={"default": {"speech_start_s": 1.0, "speech_end_s": 0.5}}),
        conv("wrongtype", audio=["audio/a.wav"]),
        conv("badname", audio={"pi per": "audio/a.wav"}),
        wavs=("audio/a.wav",),
    )
    ds = load_dataset(root)
    assert [c.id for c in ds.conversations] == ["plain"]
    turn = ds.conversations[0].turns[0]
    assert turn.audio_variants() == {DEFAULT_VARIANT: "audio/a.wav"}
    assert ds.audio_path(turn) == root / "audio/a.wav"
    got = {(p.line, p.field): p.message for p in ds.problems}
    assert "audio_meta has variants with no audio: espeak" in got[(2, "turns[0]")]
    assert "speech_end_s must be after speech_start_s" in got[(3, "turns[0].audio_meta.default")]
    assert "path (string) or a mapping" in got[(4, "turns[0].audio")]
    assert "variant name 'pi per'" in got[(5, "turns[0].audio")]


def test_paths_never_leave_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "secret.wav").write_bytes(b"outside")
    root = make(
        tmp_path / "ds",
        conv("up", audio="../secret.wav"),
        conv("deep", audio={"piper": "audio/../../secret.wav"}),
        conv("abs", audio=str(tmp_path / "secret.wav")),
        conv("ctx", contexts=["knowledge/ok.md", "../secret.wav"]),
        conv("win", audio="C:/x.wav"),
        conv("ok"),
        docs=("knowledge/ok.md",),
    )
    ds = load_dataset(root)
    assert [c.id for c in ds.conversations] == ["ok"]
    got = {(p.line, p.field): p.message for p in ds.problems}
    assert "leaves the dataset folder" in got[(1, "turns[0].audio")]
    assert "leaves the dataset folder" in got[(2, "turns[0].audio.piper")]
    assert "absolute paths are not allowed" in got[(3, "turns[0].audio")]
    assert "leaves the dataset folder" in got[(4, "turns[0].contexts[1]")]
    assert "absolute paths are not allowed" in got[(5, "turns[0].audio")]
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        ds.resolve("../secret.wav")


def test_symlinks_are_refused_even_inside_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    sf.write(tmp_path / "outside" / "x.wav", np.zeros(160, np.float32), 16000)
    root = make(
        tmp_path / "ds",
        conv("link_file", audio="audio/link.wav"),
        conv("link_dir", audio="ext/x.wav"),
        conv("link_doc", contexts=["knowledge/link.md"]),
        wavs=("audio/real.wav",),
        docs=("knowledge/real.md",),
    )
    os.symlink(root / "audio" / "real.wav", root / "audio" / "link.wav")  # stays inside: still refused
    os.symlink(tmp_path / "outside", root / "ext")
    os.symlink(root / "knowledge" / "real.md", root / "knowledge" / "link.md")
    problems = validate_dataset(root)
    got = {(p.file, p.line, p.field): p.message for p in problems}
    assert "symlinks are not allowed (audio/link.wav is one)" in got[("conversations.jsonl", 1, "turns[0].audio")]
    assert "symlinks are not allowed (ext is one)" in got[("conversations.jsonl", 2, "turns[0].audio")]
    assert "symlinks are not allowed" in got[("conversations.jsonl", 3, "turns[0].contexts[0]")]
    assert "symlinks are not allowed" in got[("knowledge/link.md", None, None)]
    with pytest.raises(DatasetError, match="symlink"):
        load_dataset(root).resolve("ext/x.wav")


def test_validate_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    root = make(
        tmp_path / "ds",
        conv("no_audio", audio={"piper": "audio/missing.wav"}),
        conv("no_doc", contexts=["knowledge/missing.md"]),
        conv("corrupt", audio="audio/corrupt.wav"),
        conv(
            "meta",
            audio="audio/a.wav",
            audio_meta={"default": {"speech_start_s": 0, "speech_end_s": 1, "duration_s": 3}},
        ),
        conv("fine", audio="audio/a.wav", contexts=["knowledge/a.md"]),
        wavs=("audio/a.wav",),
        docs=("knowledge/a.md",),
    )
    (root / "audio" / "corrupt.wav").write_bytes(b"RIFF....WAVEjunk")
    got = {(p.line, p.field): p.message for p in validate_dataset(root)}
    assert got == {
        (1, "turns[0].audio.piper"): "audio/missing.wav: file not found",
        (2, "turns[0].contexts[0]"): "knowledge/missing.md: file not found",
        (3, "turns[0].audio"): got[(3, "turns[0].audio")],
        (4, "turns[0].audio_meta.default.duration_s"): "says 3.000 s, the file is 0.100 s",
    }
    assert got[(3, "turns[0].audio")].startswith("audio/corrupt.wav: not a readable audio file")
    assert validate_dataset(root, check_audio=False) == [p for p in validate_dataset(root) if p.line in (1, 2)]


def test_missing_folder_or_file_is_one_problem(tmp_path: Path) -> None:
    assert [p.message for p in validate_dataset(tmp_path / "nope")] == ["dataset folder not found"]
    (tmp_path / "empty").mkdir()
    assert "no conversations.jsonl" in validate_dataset(tmp_path / "empty")[0].message
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "empty")


def test_json_line_round_trip() -> None:
    c = Conversation.model_validate(conv("x", audio={"piper": "audio/x.wav"}, contexts=["knowledge/a.md"]))
    again = Conversation.model_validate(json.loads(c.to_json_line()))
    assert again == c and list(json.loads(c.to_json_line())) == ["id", "tags", "turns"]


def test_cli_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    root = make(tmp_path / "ds", conv("c1"), "{oops", conv("c2", audio="../x.wav"))
    out = runner.invoke(app, ["validate", str(root)], env={"COLUMNS": "200"})
    assert out.exit_code == 1
    assert "2 problem(s)" in out.stdout and "turns[0].audio" in out.stdout and "leaves the dataset" in out.stdout
    ok = runner.invoke(app, ["validate", str(make(tmp_path / "ok", conv("c1")))])
    assert ok.exit_code == 0 and "1 conversations, 1 turns" in ok.stdout


def _bad_audio_dataset(root: Path) -> Path:
    """Line 1 clean; line 2 a truncated WAV (variant piper); line 3 NaN and +inf float WAVs in turns 1 and 2."""
    turns = [{"user": f"Question {i}?", "audio": f"audio/ok{i}.wav"} for i in range(3)]
    turns[1]["audio"], turns[2]["audio"] = "audio/nan.wav", "audio/inf.wav"
    make(
        root,
        conv("clean", audio="audio/ok0.wav"),
        conv("cut", audio={"piper": "audio/cut.wav", "espeak": "audio/ok1.wav"}),
        {"id": "nonfinite", "turns": turns},
        wavs=("audio/ok0.wav", "audio/ok1.wav", "audio/ok2.wav", "audio/cut.wav"),
    )
    cut = root / "audio" / "cut.wav"
    cut.write_bytes(cut.read_bytes()[:-1000])
    for name, bad in (("nan", np.nan), ("inf", np.inf)):
        x = np.zeros(1600, np.float32)
        x[800] = bad
        sf.write(root / "audio" / f"{name}.wav", x, 16000, subtype="FLOAT")
    return root


def test_validate_decodes_audio_and_reports_truncation_and_nan_with_file_line_field(tmp_path: Path) -> None:
    root = _bad_audio_dataset(tmp_path / "ds")
    problems = validate_dataset(root)
    got = {(p.file, p.line, p.field): p.message for p in problems}
    assert set(got) == {
        ("conversations.jsonl", 2, "turns[0].audio.piper"),
        ("conversations.jsonl", 3, "turns[1].audio"),
        ("conversations.jsonl", 3, "turns[2].audio"),
    }
    assert got[("conversations.jsonl", 2, "turns[0].audio.piper")] == (
        "audio/cut.wav: truncated: the header declares 3200 bytes of audio data, the file holds 2200 "
        "(a copy cut short, or a recorder that never finished its header: re-export the file)"
    )
    assert got[("conversations.jsonl", 3, "turns[1].audio")] == (
        "audio/nan.wav: contains NaN or infinite samples (first at 0.050 s)"
    )
    assert got[("conversations.jsonl", 3, "turns[2].audio")].startswith("audio/inf.wav: contains NaN or infinite")
    assert str(problems[0]).startswith("conversations.jsonl:2 turns[0].audio.piper: audio/cut.wav: truncated")
    assert validate_dataset(root, check_audio=False) == []  # the files exist and the paths are safe


def test_a_clean_dataset_with_audio_validates_with_no_problems(tmp_path: Path) -> None:
    root = make(
        tmp_path / "ds",
        conv("a", audio={"piper": "audio/a.wav"}, audio_meta={"piper": {"speech_start_s": 0, "speech_end_s": 0.1}}),
        conv("b", audio="audio/b.wav"),
        wavs=("audio/a.wav", "audio/b.wav"),
    )
    sf.write(root / "audio" / "b.wav", np.full(800, 0.25, np.float32), 8000, subtype="FLOAT")
    assert validate_dataset(root) == []


def test_cli_validate_reports_truncated_and_nan_audio(tmp_path: Path) -> None:
    root = _bad_audio_dataset(tmp_path / "ds")
    out = CliRunner().invoke(app, ["validate", str(root)], env={"COLUMNS": "250"})
    assert out.exit_code == 1, out.stdout
    assert "3 problem(s)" in out.stdout
    lines = out.stdout.splitlines()
    cut = next(line for line in lines if "audio/cut.wav" in line)
    assert "conversations.jsonl" in cut and "│ 2 " in cut and "turns[0].audio.piper" in cut and "truncated" in cut
    nan = next(line for line in lines if "audio/nan.wav" in line)
    assert "│ 3 " in nan and "turns[1].audio" in nan and "NaN or infinite samples" in nan
    assert any("audio/inf.wav" in line and "turns[2].audio" in line for line in lines)
