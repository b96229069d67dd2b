"""Components by factory: ``stt: {use: "module:name", ...}`` builds any plugin class, and every way a factory
section can be wrong is one error naming its field, found before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from livekit.plugins import openai as lk_openai
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.config import (
    ConfigError,
    EndpointConfig,
    Factory,
    LLMFactory,
    STTConfig,
    WorkbenchConfig,
    load_config,
)
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.models.components import ComponentError, build_component, check_components, factories
from workbench.scoring.judge import JudgeLLM
from workbench.strategies.registry import check_endpoint
from workbench.testing.worlds import make_dataset
from workbench.workflows import Suite, arun, run
from workbench.workflows.runs import Run
from workbench.workflows.suite import SuiteError

ENV = {"SPEECH_KEY": "sk-secret-123"}


def config(**sections: object) -> WorkbenchConfig:
    return WorkbenchConfig.model_validate(sections)


def test_a_section_with_use_is_a_factory_and_the_embedded_default_stays() -> None:
    c = config(stt={"use": "livekit.plugins.openai:STT", "model": "whisper-1", "base_url": "http://127.0.0.1:9/v1"})
    assert isinstance(c.stt, Factory) and c.stt.args == {"model": "whisper-1", "base_url": "http://127.0.0.1:9/v1"}
    assert isinstance(WorkbenchConfig().stt, STTConfig) and factories(WorkbenchConfig()) == {}
    with pytest.raises(ValueError, match="modle"):  # without `use:` a typo is still an error
        config(stt={"modle": "base"})
    with pytest.raises(ValueError, match="module:name"):
        config(tts={"use": "livekit.plugins.openai.TTS"})


def test_a_plugin_class_is_built_with_its_arguments_and_the_key_from_the_environment() -> None:
    f = Factory(
        use="livekit.plugins.openai:STT", model="whisper-1", base_url="http://127.0.0.1:9/v1", api_key_env="SPEECH_KEY"
    )
    stt = build_component("stt", f, ENV)
    assert isinstance(stt, lk_openai.STT)
    assert stt._client.api_key == "sk-secret-123" and str(stt._client.base_url).startswith("http://127.0.0.1:9/v1")
    # a classmethod factory, as LiveKit's Silero plugin builds its VAD
    vad = build_component("vad", Factory(use="livekit.plugins.silero:VAD.load", min_silence_duration=0.4))
    assert type(vad).__name__ == "VAD" and vad._opts.min_silence_duration == 0.4


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"use": "livekit.plugins.nosuchvendor:STT"},
            "stt.use: module 'livekit.plugins.nosuchvendor' is not installed "
            "(pip install livekit-plugins-nosuchvendor)",
        ),
        ({"use": "livekit.plugins.openai:NoSuchSTT"}, "stt.use: 'livekit.plugins.openai' has no callable 'NoSuchSTT'"),
        (
            {"use": "livekit.plugins.openai:STT", "modle": "whisper-1"},
            "stt: livekit.plugins.openai:STT does not accept",
        ),
        (
            {"use": "livekit.plugins.openai:STT", "api_key_env": "UNSET_SPEECH_KEY"},
            "stt.api_key_env: environment variable UNSET_SPEECH_KEY is not set",
        ),
    ],
    ids=["module", "name", "argument", "key"],
)
def test_every_bad_factory_section_is_one_error_naming_the_field(section: dict, message: str) -> None:
    with pytest.raises(ComponentError) as e:
        check_components(config(stt=section), ENV)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_all_bad_sections_are_reported_together() -> None:
    c = config(
        stt={"use": "livekit.plugins.openai:STT", "api_key_env": "UNSET_SPEECH_KEY"},
        tts={"use": "livekit.plugins.openai:TTS", "voices": "alloy"},
        turn={"detector": {"use": "nosuchpackage.turns:Detector"}},
    )
    with pytest.raises(ComponentError) as e:
        check_components(c, ENV)
    assert [p.split(":")[0].split(".use")[0] for p in str(e.value).split("; ")] == [
        "stt.api_key_env",
        "tts",
        "turn.detector",
    ]


def test_a_good_config_checks_clean_and_the_key_never_lands_in_the_config_dump(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("stt: {use: 'livekit.plugins.openai:STT', model: whisper-1, api_key_env: SPEECH_KEY}\n")
    c = load_config(path, environ=ENV)
    check_components(c, ENV)
    dumped = json.dumps(c.model_dump(mode="json"))
    assert "SPEECH_KEY" in dumped and "sk-secret-123" not in dumped


def test_a_bad_factory_section_in_a_file_is_a_config_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("tts: {use: not-a-path}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*module:name"):
        load_config(path, environ={})


def test_a_run_with_a_bad_factory_stops_before_its_folder_exists_and_the_cli_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    dataset = make_dataset(tmp_path / "ds")
    (tmp_path / "c.yaml").write_text("stt: {use: 'livekit.plugins.nosuchvendor:STT'}\n")
    suite = {"dataset": str(dataset), "config": str(tmp_path / "c.yaml"), "strategies": {"plain": "plain"}}
    with pytest.raises(ComponentError, match=r"stt\.use: module 'livekit\.plugins\.nosuchvendor' is not installed"):
        run(Suite.model_validate(suite), runs_dir=tmp_path / "runs", run_id="r1", progress=False)
    assert not (tmp_path / "runs" / "r1").exists()

    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    res = CliRunner().invoke(app, ["run", str(tmp_path / "suite.yaml"), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 2, res.output
    assert "livekit-plugins-nosuchvendor" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_a_suite_names_its_own_components_over_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("tts: {kind: espeak}\nvad: {min_silence_duration: 0.3}\n")
    suite = Suite(config=tmp_path / "c.yaml", components={"stt": {"use": "livekit.plugins.openai:STT", "model": "x"}})
    config = suite.workbench_config()
    assert isinstance(config.stt, Factory) and config.tts.kind == "espeak"  # type: ignore[union-attr]
    assert config.vad.min_silence_duration == 0.3  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"(?s)components.*stt\.modle"):
        Suite(components={"stt": {"modle": "base"}})
    bad = Suite(dataset=make_dataset(tmp_path / "ds"), components={"tts": {"use": "livekit.plugins.nosuchvendor:TTS"}})
    with pytest.raises(ComponentError, match=r"tts\.use: module 'livekit\.plugins\.nosuchvendor'"):
        run(bad, runs_dir=tmp_path / "runs", progress=False)


# -- the LLM endpoint by factory ---------------------------------------------------------------------------------


def llm_factory(base_url: str, **extra: object) -> dict[str, object]:
    """livekit-plugins-openai's own ``LLM`` class named by factory: the same path a hosted vendor's plugin takes."""
    return {"use": "livekit.plugins.openai:LLM", "base_url": base_url, "model": "scripted-model", **extra}


def test_an_llm_section_with_use_is_a_factory_endpoint_checked_like_the_speech_ones() -> None:
    cfg = WorkbenchConfig.model_validate(
        {"llm": llm_factory("http://127.0.0.1:9/v1"), "endpoints": {"big": {"use": "livekit.plugins.nosuch:LLM"}}}
    )
    assert isinstance(cfg.llm, LLMFactory) and cfg.llm.kind == "factory" and cfg.llm.args["model"] == "scripted-model"
    assert isinstance(cfg.endpoints["big"], LLMFactory)
    assert isinstance(WorkbenchConfig().llm, EndpointConfig)  # the embedded llama.cpp endpoint stays the default
    assert set(factories(cfg)) == {"llm", "endpoints.big"}
    with pytest.raises(
        ComponentError, match=r"endpoints\.big\.use: module 'livekit\.plugins\.nosuch' is not installed"
    ):
        check_components(cfg)
    keyed = config(llm=llm_factory("http://127.0.0.1:9/v1", api_key_env="WB_TEST_LLM_KEY"))
    with pytest.raises(ComponentError, match=r"llm\.api_key_env: environment variable WB_TEST_LLM_KEY is not set"):
        check_components(keyed, environ={})
    with pytest.raises(ComponentError, match=r"llm: livekit\.plugins\.openai:LLM does not accept these arguments"):
        check_components(config(llm=llm_factory("http://127.0.0.1:9/v1", modle="x")))


async def test_a_text_run_replays_through_a_factory_built_llm_and_records_what_ran(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WB_TEST_LLM_KEY", "sk-from-env")
    async with ScriptedEndpoint(Script(text="We open at 8 am.")) as ep:
        suite = Suite(
            dataset=make_dataset(tmp_path / "ds", conversations=1, turns=2),
            strategies={"plain": "plain", "short": {"kind": "plain", "history_tokens": 200}},
            components={"llm": llm_factory(ep.base_url, api_key_env="WB_TEST_LLM_KEY")},
        )
        result = await arun(suite, runs_dir=tmp_path / "runs", progress=False)
        asked = [json.dumps(r.body) for r in ep.requests]
        for question in ("question 0.0", "question 0.1"):  # each strategy's turn went out through the plugin
            assert sum(question in body and "scripted-model" in body for body in asked) >= 2
    rows = Run.load(result.run_id, tmp_path / "runs").rows
    assert len(rows) == 4 and rows["error_kind"].isna().all() and (rows["answer"] == "We open at 8 am.").all()
    manifest = Run.load(result.run_id, tmp_path / "runs").manifest
    assert manifest["models"]["llm"]["use"] == "livekit.plugins.openai:LLM"
    assert manifest["models"]["llm"]["package"] == "livekit-plugins-openai"
    assert "sk-from-env" not in json.dumps(manifest)


def test_agent_frameworks_and_the_judge_refuse_a_factory_endpoint_before_anything_runs(tmp_path: Path) -> None:
    suite = Suite(
        dataset=make_dataset(tmp_path / "ds"),
        strategies={"plain": "plain", "team": {"kind": "autogen"}},
        components={"llm": llm_factory("http://127.0.0.1:9/v1")},
    )
    with pytest.raises(SuiteError, match=r"strategies\.team: strategy 'team' \(autogen\) sends OpenAI API requests"):
        run(suite, runs_dir=tmp_path / "runs", run_id="r1", progress=False)
    assert not (tmp_path / "runs" / "r1").exists()
    # on an OpenAI-compatible endpoint of its own, the same strategy is accepted
    mixed = config(
        llm=llm_factory("http://127.0.0.1:9/v1"), endpoints={"oa": {"kind": "openai", "base_url": "u", "model": "m"}}
    )
    check_endpoint({"kind": "autogen", "endpoint": "oa"}, mixed)
    with pytest.raises(ConfigError, match="unknown endpoint 'nope'"):
        check_endpoint({"kind": "plain", "endpoint": "nope"}, mixed)
    with ModelStack(mixed) as stack, pytest.raises(ConfigError, match="judge endpoint 'default' is a factory"):
        JudgeLLM.from_endpoint("default", stack=stack)
