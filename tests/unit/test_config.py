from pathlib import Path

import pytest

from workbench.core.config import ConfigError, EndpointConfig, env_overrides, load_config


def test_embedded_default_needs_no_file() -> None:
    cfg = load_config(environ={})
    assert cfg.llm.kind == "local" and cfg.llm.gguf == "smollm2"
    assert cfg.stt.model == "tiny.en" and cfg.tts.kind == "piper" and cfg.turn.mode == "vad"


def test_yaml_then_environment_override(tmp_path: Path) -> None:
    f = tmp_path / "wb.yaml"
    f.write_text(
        "llm:\n  kind: openai\n  base_url: http://10.0.0.5:8000/v1/\n  model: qwen\n  api_key_env: MY_KEY\n"
        "tts:\n  kind: espeak\n"
    )
    cfg = load_config(f, environ={"WORKBENCH__TTS__KIND": "piper", "WORKBENCH__LLM__MAX_TOKENS": "64"})
    assert cfg.llm.base_url == "http://10.0.0.5:8000/v1"  # trailing slash dropped
    assert cfg.llm.max_tokens == 64 and isinstance(cfg.llm.max_tokens, int)
    assert cfg.tts.kind == "piper"  # environment wins over the file


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    f = tmp_path / "wb.yaml"
    f.write_text("stt:\n  model: base\n")
    assert load_config(environ={"WORKBENCH_CONFIG": str(f)}).stt.model == "base"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("llm:\n  kind: bogus\n", "kind"), ("stt:\n  modle: base\n", "modle"), ("- a\n- b\n", "mapping"), ("a: [\n", "")],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, environ={})
    assert str(f) in str(e.value) and fragment in str(e.value)


def test_key_comes_from_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EndpointConfig(kind="openai", base_url="https://api.example.com/v1", model="m", api_key_env="WB_TEST_KEY")
    monkeypatch.delenv("WB_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="WB_TEST_KEY"):
        ep.api_key()
    monkeypatch.setenv("WB_TEST_KEY", "sk-test-123")
    assert ep.api_key() == "sk-test-123"
    assert "sk-test-123" not in ep.model_dump_json()  # configs (and so manifests) never hold the key


def test_env_overrides_nest_and_parse() -> None:
    got = env_overrides({"WORKBENCH__ENDPOINTS__QWEN__GGUF": "qwen2.5-0.5b", "OTHER": "x", "WORKBENCH__": "y"})
    assert got == {"endpoints": {"qwen": {"gguf": "qwen2.5-0.5b"}}}


def test_named_endpoint_lookup() -> None:
    cfg = load_config(environ={"WORKBENCH__ENDPOINTS__BIG__GGUF": "qwen2.5-0.5b"})
    assert cfg.endpoint("big").gguf == "qwen2.5-0.5b"
    assert cfg.endpoint(None) is cfg.llm
    with pytest.raises(KeyError, match="nope"):
        cfg.endpoint("nope")
