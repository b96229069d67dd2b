"""Fuzzing the two doors bad input comes through: dataset lines and audio files.

The contract: a clear error type (``DatasetProblem``s for a dataset, ``AudioLoadError`` for audio),
never another exception, never a hang (hypothesis deadlines per example, a timeout per test).
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.replay.audio import AudioLoadError, load_audio
from workbench.replay.dataset import Conversation, load_dataset, parse_conversations

EXAMPLES = int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES", "100"))
"""Examples per fuzz test; raise it for a deeper local session (e.g. 5000)."""
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(milliseconds=800),
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow],
)
pytestmark = pytest.mark.timeout(120)

GOOD_LINE = json.dumps(
    {
        "id": "c1",
        "tags": ["a"],
        "turns": [
            {
                "user": "Hi?",
                "audio": {"piper": "audio/x.wav"},
                "audio_meta": {"piper": {"speech_start_s": 0.3, "speech_end_s": 1.0, "duration_s": 1.8}},
                "reference": "Hello.",
                "contexts": ["knowledge/a.md"],
                "facts": ["x"],
            }
        ],
    }
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["id", "tags", "turns", "user", "audio", "audio_meta", "reference", "contexts", "facts"])


def _check_parse(data: bytes) -> None:
    convs, problems = parse_conversations(data)
    n_lines = len(data.split(b"\n"))
    for p in problems:
        assert p.file == "conversations.jsonl" and p.line is not None and 1 <= p.line <= n_lines
        assert isinstance(p.message, str) and p.message
    for c in convs:
        assert isinstance(c, Conversation)
        Conversation.model_validate(json.loads(c.to_json_line()))  # what loads, serialises and reloads


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    _check_parse(data)


@settings(FUZZ, max_examples=max(10, EXAMPLES // 3))  # recursive generation is the slow part
@given(st.lists(json_values, max_size=5))
def test_random_json_lines_are_loaded_or_reported(values: list) -> None:
    _check_parse("\n".join(json.dumps(v) for v in values).encode())


@settings(FUZZ, max_examples=max(10, EXAMPLES // 3))
@given(
    st.dictionaries(field_names, json_values, max_size=4),
    st.dictionaries(field_names, json_values, max_size=4),
)
def test_conversations_with_random_fields_are_loaded_or_reported(top: dict, turn: dict) -> None:
    base = json.loads(GOOD_LINE)
    base.update({k: v for k, v in top.items() if k in ("id", "tags", "turns")})
    if isinstance(base.get("turns"), list) and base["turns"] and isinstance(base["turns"][0], dict):
        base["turns"][0].update(turn)
    _check_parse(json.dumps(base).encode())


@FUZZ
@given(st.data())
def test_mutated_good_lines_are_loaded_or_reported(data: st.DataObject) -> None:
    raw = bytearray(GOOD_LINE.encode())
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del raw[i]
        else:
            raw[i:i] = data.draw(st.sampled_from([b"..", b"/", b'"', b"\\u0000", b"\\ud800", b"\n", b"9" * 5000]))
    _check_parse(bytes(raw) + b"\n" + GOOD_LINE.replace("c1", "c2").encode())


@FUZZ
@given(st.sampled_from(["../x.wav", "/etc/passwd", "a/../../b", "C:\\x.wav", "\x00", "", "a\\..\\b", "~/x"]))
def test_hostile_paths_never_load(path: str) -> None:
    line = json.loads(GOOD_LINE)
    line["turns"][0]["audio"] = {"piper": path}
    convs, problems = parse_conversations(json.dumps(line).encode())
    if path == "~/x":  # a folder literally named "~" inside the dataset: harmless
        assert convs
    else:
        assert not convs and problems and problems[0].field == "turns[0].audio.piper"


def test_a_huge_dataset_line_is_one_problem(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    deep = "[" * 100_000 + "]" * 100_000
    (root / "conversations.jsonl").write_text(deep + "\n" + GOOD_LINE + "\n")
    ds = load_dataset(root)
    assert [c.id for c in ds.conversations] == ["c1"] and [p.line for p in ds.problems] == [1]


# -- audio -------------------------------------------------------------------------------------
_TMP = Path(tempfile.mkdtemp(prefix="wb-fuzz-audio-"))


def _wav_bytes(x: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


_VALID = _wav_bytes(np.sin(np.arange(8000) / 5.0).astype(np.float32) * 0.5)


def _check_load(data: bytes, suffix: str = ".wav") -> None:
    path = _TMP / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        a = load_audio(path)
    except AudioLoadError as e:
        assert e.reason and e.path == str(path)
        return
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1 and a.samples.size > 0
    assert a.sample_rate == 16000 and np.isfinite(a.samples).all()


@FUZZ
@given(st.binary(max_size=4000), st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".bin"]))
def test_random_bytes_are_audio_load_errors(data: bytes, suffix: str) -> None:
    _check_load(data, suffix)


@FUZZ
@given(st.integers(0, len(_VALID)))
def test_truncated_wavs(n: int) -> None:
    _check_load(_VALID[:n])


@FUZZ
@given(
    rate=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 100, 8000, 16000, 48000, 10**9])),
    channels=st.integers(0, 70_000),
    bits=st.sampled_from([0, 1, 8, 16, 24, 32, 64, 65535]),
    fmt=st.sampled_from([0, 1, 3, 6, 7, 0xFFFE, 0xFFFF]),
    declared=st.one_of(st.integers(0, 2**32 - 1), st.just(0xFFFFFFFF)),
    payload=st.binary(max_size=2000),
)
def test_wav_headers_with_absurd_fields(
    rate: int, channels: int, bits: int, fmt: int, declared: int, payload: bytes
) -> None:
    block = (channels * bits // 8) & 0xFFFF
    header = (
        b"RIFF"
        + struct.pack("<I", (36 + declared) & 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, fmt, channels & 0xFFFF, rate, (rate * block) & 0xFFFFFFFF, block, bits)
        + b"data"
        + struct.pack("<I", declared)
    )
    _check_load(header + payload)


@FUZZ
@given(st.integers(0, 7999), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_single_non_finite_sample_is_refused(at: int, bad: float) -> None:
    x = np.zeros(8000, np.float32)
    x[at] = bad
    path = _TMP / "nan.wav"
    path.write_bytes(_wav_bytes(x, subtype="FLOAT"))
    with pytest.raises(AudioLoadError, match="NaN or infinite"):
        load_audio(path)
