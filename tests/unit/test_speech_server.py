"""The speech server's HTTP contract with the models replaced by fakes (fast): what OpenAI clients send and read."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from livekit import rtc

from workbench.core.config import EndpointConfig, TurnConfig, WorkbenchConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.faults.speech import EnergyVAD, FixedDelaySTT
from workbench.models import ModelStack
from workbench.models.speech_server import (
    OUT_RATE,
    BadRequest,
    SpeechServer,
    create_app,
    decode_upload,
    encode,
    openai_plugin_components,
    wav_bytes,
)
from workbench.testing.worlds import (
    ENDPOINTING,
    LLM_TTFT,
    STT_DELAY,
    TTS_TTFB,
    VAD_SILENCE,
    fake_speech_stack,
    llm_transport_s,
    voice_dataset,
)
from workbench.workflows import Suite, arun, load_run
from workbench.workflows.suite import VoiceOptions


class FakeEngines:
    stt_model = "whisper-fake"
    tts_model = "voice-fake"
    language = "en"
    tts_sample_rate = 22050

    def __init__(self) -> None:
        self.heard: list[np.ndarray] = []
        self.spoken: list[tuple[str, float]] = []
        self.fail_tts = False

    def transcribe(self, pcm16k: np.ndarray) -> str:
        self.heard.append(pcm16k)
        return f"heard {len(pcm16k) / 16000:.1f} seconds"

    def pcm_chunks(self, text: str, speed: float) -> Iterator[bytes]:
        self.spoken.append((text, speed))
        if self.fail_tts:
            raise RuntimeError("voice broke")
        for _ in text.split("."):  # one chunk of 0.5 s per sentence, like Piper
            yield np.full(self.tts_sample_rate // 2, 1000, np.int16).tobytes()


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return wav_bytes((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes(), rate)


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, FakeEngines]]:
    engines = FakeEngines()
    async with TestClient(TestServer(create_app(engines))) as c:
        yield c, engines


def upload(data: bytes, **fields: str) -> FormData:
    form = FormData()
    form.add_field("file", data, filename="file.wav", content_type="audio/wav")
    for k, v in {"model": "whisper-1", **fields}.items():
        form.add_field(k, v)
    return form


async def test_health_and_models(client) -> None:
    c, _ = client
    r = await c.get("/health")
    assert r.status == 200 and (await r.json())["stt"] == "whisper-fake"
    assert r.headers["x-request-id"].startswith("req_")
    ids = [m["id"] for m in (await (await c.get("/v1/models")).json())["data"]]
    assert {"whisper-1", "tts-1", "whisper-fake", "voice-fake"} <= set(ids)


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", None])
async def test_transcription_formats(client, fmt) -> None:
    c, engines = client
    fields = {"response_format": fmt} if fmt else {}
    r = await c.post("/v1/audio/transcriptions", data=upload(tone(1.5, 8000), **fields))
    assert r.status == 200
    assert len(engines.heard[0]) == 24000, "any rate is resampled to 16 kHz mono before the model"
    if fmt == "text":
        assert await r.text() == "heard 1.5 seconds"
        return
    body = await r.json()
    assert body["text"] == "heard 1.5 seconds"
    if fmt == "verbose_json":
        assert body["language"] == "en" and body["duration"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("data", "fields", "param"),
    [
        (b"", {}, "file"),
        (b"this is not audio at all" * 20, {}, "file"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", {}, "file"),
        (None, {"response_format": "srt"}, "response_format"),
    ],
    ids=["empty", "text-bytes", "broken-wav", "srt"],
)
async def test_bad_transcription_input_is_a_400_json_error(client, data, fields, param) -> None:
    c, engines = client
    r = await c.post("/v1/audio/transcriptions", data=upload(tone(0.5) if data is None else data, **fields))
    assert r.status == 400
    err = (await r.json())["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]
    assert not engines.heard
    assert (await c.get("/health")).status == 200, "the server keeps serving"


async def test_transcription_without_a_file_or_multipart(client) -> None:
    c, _ = client
    r = await c.post("/v1/audio/transcriptions", data=FormData({"model": "whisper-1"}, default_to_multipart=True))
    assert r.status == 400 and (await r.json())["error"]["param"] == "file"
    for kwargs in ({"data": {"model": "whisper-1"}}, {"json": {"model": "whisper-1"}}):
        r = await c.post("/v1/audio/transcriptions", **kwargs)
        assert r.status == 400 and "multipart" in (await r.json())["error"]["message"]


async def test_speech_pcm_streams_24khz_int16(client) -> None:
    c, engines = client
    body = {"model": "tts-1", "input": "One. Two.", "voice": "alloy", "response_format": "pcm", "speed": 1.0}
    r = await c.post("/v1/audio/speech", json=body)
    assert r.status == 200 and r.headers["Content-Type"] == "audio/pcm"
    assert r.headers["x-request-id"].startswith("req_")
    pcm = np.frombuffer(await r.read(), np.int16)
    # three 0.5 s chunks at 22.05 kHz, resampled to 24 kHz
    assert len(pcm) == pytest.approx(1.5 * OUT_RATE, abs=50)
    assert np.median(pcm) == pytest.approx(1000, abs=5), "16-bit little-endian samples, level kept"
    assert engines.spoken == [("One. Two.", 1.0)]


async def test_speech_wav_and_compressed_formats(client) -> None:
    c, _ = client
    r = await c.post("/v1/audio/speech", json={"input": "Hello.", "response_format": "wav"})
    assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(await r.read())) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (OUT_RATE, 1, 2)
        assert w.getnframes() == pytest.approx(OUT_RATE, abs=50)
    r = await c.post("/v1/audio/speech", json={"input": "Hello."})  # OpenAI's default: mp3
    assert r.status == 200 and r.headers["Content-Type"] == "audio/mpeg"
    assert len(decode_upload(await r.read())) == pytest.approx(16000, rel=0.1)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "   "}, "input"),
        ({"voice": "alloy"}, "input"),
        ({"input": "x" * 5000}, "input"),
        ({"input": "Hi.", "response_format": "ogg-vorbis"}, "response_format"),
        ({"input": "Hi.", "speed": 9}, "speed"),
        ({"input": "Hi.", "speed": "fast"}, "speed"),
    ],
)
async def test_bad_speech_input_is_a_400_json_error(client, body, param) -> None:
    c, engines = client
    r = await c.post("/v1/audio/speech", json=body)
    assert r.status == 400 and (await r.json())["error"]["param"] == param
    assert not engines.spoken


async def test_speech_body_that_is_not_json(client) -> None:
    c, _ = client
    r = await c.post("/v1/audio/speech", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "JSON" in (await r.json())["error"]["message"]
    r = await c.post("/v1/audio/speech", json=["a list"])
    assert r.status == 400


async def test_a_model_failure_is_a_500_json_error_and_the_server_lives_on(client) -> None:
    c, engines = client
    engines.fail_tts = True
    r = await c.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm"})
    assert r.status == 500
    err = (await r.json())["error"]
    assert err["type"] == "server_error" and "voice broke" in err["message"]
    engines.fail_tts = False
    assert (await c.post("/v1/audio/speech", json={"input": "Hi.", "response_format": "pcm"})).status == 200


async def test_unknown_route_is_a_json_404(client) -> None:
    c, _ = client
    r = await c.post("/v1/audio/translations", data=b"")
    assert r.status == 404 and "error" in json.loads(await r.text())


async def test_engine_calls_run_off_the_event_loop(client) -> None:
    """A slow transcription does not block /health (each engine has its own thread)."""
    c, engines = client
    release, entered = threading.Event(), threading.Event()
    real = engines.transcribe

    def slow(pcm: np.ndarray) -> str:
        entered.set()
        release.wait(5)
        return real(pcm)

    engines.transcribe = slow
    pending = asyncio.ensure_future(c.post("/v1/audio/transcriptions", data=upload(tone(0.5))))
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
    assert (await c.get("/health")).status == 200
    release.set()
    assert (await pending).status == 200


def test_encode_round_trips_through_a_decoder() -> None:
    pcm = (np.sin(np.arange(OUT_RATE) / 10) * 5000).astype(np.int16).tobytes()
    for fmt in ("wav", "mp3", "flac", "opus", "aac"):
        decoded = decode_upload(encode(pcm, OUT_RATE, fmt))
        assert len(decoded) == pytest.approx(16000, rel=0.1), fmt


def test_an_empty_upload_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="empty"):
        decode_upload(b"")


async def warm_up_openai_plugins(base_url: str) -> None:
    """One throwaway request each: the first request in a process pays ~0.15-0.35 s of lazy imports in the
    openai client (once per process, not per instance), which the embedded components never pay."""
    stt, tts = openai_plugin_components(base_url)
    try:
        await stt.recognize([rtc.AudioFrame(np.zeros(800, np.int16).tobytes(), 16000, 1, 800)])  # heard as nothing
        async for _ in tts.synthesize("Warm up."):
            pass
    finally:
        await stt.aclose()
        await tts.aclose()


LATENCIES = ["eou_delay_s", "stt_s", "llm_ttfc_s", "tts_ttfb_s", "v2v_s"]


async def test_voice_replay_through_the_openai_plugin_classes_adds_up_to_the_known_delays(tmp_path: Path) -> None:
    """The embedded path's known-delay check (tests/unit/test_replay_voice.py) with livekit-plugins-openai's own
    STT and TTS, built from the config's factory sections, talking HTTP to a speech server of the same delays.

    Both paths run here side by side (two shared cores make absolute times drift with the load): the in-process
    fakes must add up to the known delays within 40 ms as there, and the plugin path must measure the same
    figures as they do, up to its transport cost (HTTP, WAV, JSON: ~10-20 ms a side, ~50 on a slow shared host)."""
    ds = voice_dataset(tmp_path / "ds", turns=2)  # two real-time turns a path: the suite's time is the budget
    texts = ["question 0", "question 1"]
    suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
    # in its own process, as a real server is (a server thread in this process would share the GIL with the session)
    server = SpeechServer(
        log_dir=tmp_path / "logs",
        engines="workbench.faults.speech:FixedDelayEngines",
        engines_args={"stt_delay_s": STT_DELAY, "tts_ttfb_s": TTS_TTFB, "texts": texts},
    )
    with server, ScriptedEndpoint(Script(ttft_s=LLM_TTFT, text="Sure.")) as ep:
        transport = await llm_transport_s(ep.base_url, LLM_TTFT)  # loopback HTTP and the SDK: part of the LLM's time
        url = server.base_url
        embedded = fake_speech_stack(ep, tmp_path / "embedded", FixedDelaySTT(delay_s=STT_DELAY, texts=texts))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=embedded, progress=False)
        base = load_run(res.path)
        cfg = WorkbenchConfig(
            llm=EndpointConfig(kind="openai", base_url=ep.base_url, model="m"),
            stt={"use": "livekit.plugins.openai:STT", "base_url": url, "api_key": "unused", "model": "whisper-1"},
            tts={"use": "livekit.plugins.openai:TTS", "base_url": url, "api_key": "unused", "model": "tts-1"}
            | {"response_format": "pcm"},
            turn=TurnConfig(mode="vad", min_endpointing_delay=ENDPOINTING, max_endpointing_delay=1.0),
            state_dir=tmp_path / "state",
        )
        await warm_up_openai_plugins(url)
        stack = ModelStack(cfg)
        stack.vad = lambda: EnergyVAD(silence_s=VAD_SILENCE)  # type: ignore[method-assign]
        assert type(stack.stt()).__module__ == "livekit.plugins.openai.stt"
        assert type(stack.tts()).__module__ == "livekit.plugins.openai.tts"
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    df = load_run(res.path)
    print("\nembedded:\n", base[LATENCIES], "\nopenai plugins over HTTP:\n", df[LATENCIES])
    for run in (base, df):
        assert len(run) == 2 and run["error_kind"].isna().all(), run[["error_kind", "error"]]
        assert run["realtime"].all() and (run["agent_audio_s"] > 0).all()
        assert run["transcript"].tolist() == texts
    expected_eou = VAD_SILENCE + max(STT_DELAY, ENDPOINTING - VAD_SILENCE)
    known = {
        "eou_delay_s": expected_eou,
        "stt_s": VAD_SILENCE + STT_DELAY,
        "llm_ttfc_s": LLM_TTFT + transport,
        "tts_ttfb_s": TTS_TTFB,
        "v2v_s": expected_eou + LLM_TTFT + transport + TTS_TTFB,
    }
    for column, value in known.items():
        own = 0.080 if column == "v2v_s" else 0.040  # as in test_replay_voice: v2v carries every hand-off's scheduling
        assert abs(base[column].median() - value) < own, ("embedded", column, base[column].tolist(), value)
        transport = df[column].median() - base[column].median()
        # HTTP, WAV and JSON a side: 10-20 ms on a quiet machine, up to ~50 on a slow shared host; v2v crosses twice
        budget = 0.090 if column == "v2v_s" else 0.060
        # below: jitter, and the in-process fakes loading the embedded path's own loop (its LLM figure ~20 ms higher)
        assert -0.030 < transport < budget, (column, df[column].tolist(), base[column].tolist())
        assert (df[column] - value).abs().max() < 0.150, (column, df[column].tolist(), value)
