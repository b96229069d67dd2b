"""Config and suite parsing never crash on hostile input: a usable config, or one clear error type."""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from workbench.core.config import ConfigError, WorkbenchConfig, load_config
from workbench.workflows.suite import Suite, SuiteError, load_suite

SETTINGS = settings(max_examples=150, deadline=800, suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8
)
keys = st.sampled_from(["llm", "endpoints", "stt", "tts", "vad", "turn", "embeddings", "state_dir", "bogus"])


@SETTINGS
@given(st.binary(max_size=400))
def test_random_config_bytes_are_a_config_or_a_config_error(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes(data)
    try:
        assert isinstance(load_config(f, environ={}), WorkbenchConfig)
    except ConfigError as e:
        assert str(f) in str(e)


@SETTINGS
@given(st.dictionaries(keys, values, max_size=4))
def test_random_config_structures_are_a_config_or_a_config_error(tmp_path: Path, data: dict) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(data))
    with contextlib.suppress(ConfigError):
        load_config(f, environ={})


@SETTINGS
@given(st.dictionaries(st.from_regex(r"WORKBENCH__[A-Za-z_]{1,20}", fullmatch=True), st.text(max_size=30), max_size=3))
def test_random_environment_overrides_are_a_config_or_a_config_error(environ: dict) -> None:
    with contextlib.suppress(ConfigError):
        load_config(None, environ=environ)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*Suite.model_fields, "bogus"]), values, max_size=5))
def test_random_suites_are_a_suite_or_a_clear_error(tmp_path: Path, data: dict) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    with contextlib.suppress(ValidationError, SuiteError):
        load_suite(f)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_suite_bytes_are_a_suite_or_a_clear_error(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "s.yaml"
    f.write_bytes(data)
    with contextlib.suppress(ValidationError, SuiteError):
        load_suite(f)
