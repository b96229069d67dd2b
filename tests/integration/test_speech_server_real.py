"""livekit-plugins-openai's own STT and TTS classes against the managed speech server (embedded Whisper and Piper)."""

from __future__ import annotations

import json
import socket
import time
import wave
from pathlib import Path

import httpx2
import numpy as np
import pytest
from livekit import rtc
from livekit.plugins import openai as lk_openai

from workbench.core.wer import wer
from workbench.models.speech_server import SpeechServer, openai_plugin_components

pytestmark = pytest.mark.integration
DATASET = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo"


def demo_turn(conversation: str = "c001") -> tuple[rtc.AudioFrame, str]:
    """The first turn of a demo conversation: its Piper recording and its transcript."""
    for line in (DATASET / "conversations.jsonl").read_text().splitlines():
        conv = json.loads(line)
        if conv["id"] == conversation:
            turn = conv["turns"][0]
            with wave.open(str(DATASET / turn["audio"]["piper"])) as w:
                rate, ch, data = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
            return rtc.AudioFrame(data, rate, ch, len(data) // (2 * ch)), turn["user"]
    raise LookupError(conversation)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    s = SpeechServer(log_dir=tmp_path_factory.mktemp("speech-logs"))
    s.start()
    yield s
    s.stop()


async def test_plugin_stt_transcribes_a_demo_recording(server, network_guard) -> None:
    frame, transcript = demo_turn("c001")
    stt = lk_openai.STT(base_url=server.base_url, api_key="unused", model="whisper-1", language="en")
    try:
        t0 = time.perf_counter()
        event = await stt.recognize([frame])
        took = time.perf_counter() - t0
    finally:
        await stt.aclose()
    text = event.alternatives[0].text
    print(f"\nplugin STT: {frame.duration:.2f} s of audio in {took:.2f} s: {text!r}")
    assert wer(transcript, text) <= 0.1, text
    assert event.alternatives[0].language == "en"
    assert not network_guard.attempts


async def test_plugin_tts_speaks_what_the_stt_hears_back(server, network_guard) -> None:
    sentence = "Our Lakeside office opens at eight in the morning."
    stt, tts = openai_plugin_components(server.base_url)
    try:
        t0 = time.perf_counter()
        first, frames = None, []
        async for audio in tts.synthesize(sentence):
            first = first if first is not None else time.perf_counter() - t0
            frames.append(audio.frame)
        took = time.perf_counter() - t0
        speech = rtc.combine_audio_frames(frames)
        print(f"\nplugin TTS: {speech.duration:.2f} s of audio, first frame {first:.2f} s, all in {took:.2f} s")
        assert speech.sample_rate == 24000 and speech.num_channels == 1
        assert 1.5 < speech.duration < 6.0, "24 kHz PCM decoded at the rate it was made (not sped up or slowed)"
        level = np.abs(np.frombuffer(speech.data, np.int16)).mean()
        assert level > 300, "audible speech, not silence or noise floor"
        heard = (await stt.recognize(frames)).alternatives[0].text
    finally:
        await stt.aclose()
        await tts.aclose()
    assert wer(sentence, heard) <= 0.15, heard
    assert not network_guard.attempts


async def test_plugin_tts_default_mp3_also_decodes(server) -> None:
    tts = lk_openai.TTS(base_url=server.base_url, api_key="unused", model="tts-1")  # response_format mp3
    try:
        frames = [a.frame async for a in tts.synthesize("Hello there.")]
    finally:
        await tts.aclose()
    assert 0.4 < rtc.combine_audio_frames(frames).duration < 3.0


@pytest.mark.parametrize("payload", [b"", b"definitely not a wav file" * 40], ids=["empty", "not-audio"])
def test_bad_upload_is_a_400_json_error(server, payload: bytes) -> None:
    r = httpx2.post(
        f"{server.base_url}/audio/transcriptions",
        files={"file": ("file.wav", payload, "audio/wav")},
        data={"model": "whisper-1"},
        timeout=30,
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "file"
    assert httpx2.get(f"{server.url}/health", timeout=5).status_code == 200


async def test_silence_is_an_empty_transcript_not_an_error(server) -> None:
    stt = lk_openai.STT(base_url=server.base_url, api_key="unused", model="whisper-1")
    try:
        empty = await stt.recognize([rtc.AudioFrame(b"", 16000, 1, 0)])
    finally:
        await stt.aclose()
    assert empty.alternatives[0].text == ""


def test_server_is_loopback_only_and_stop_frees_the_port(tmp_path) -> None:
    import psutil

    s = SpeechServer(log_dir=tmp_path)
    info = s.start()
    assert info.base_url.startswith("http://127.0.0.1:")
    assert s.start().pid == info.pid, "start is idempotent"
    listening = {c.laddr.ip for c in psutil.Process(info.pid).net_connections() if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}
    s.stop()
    assert not psutil.pid_exists(info.pid) or psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", s.port))  # free again


def test_a_server_that_cannot_start_says_why(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        s = SpeechServer(log_dir=tmp_path, port=taken.getsockname()[1], start_timeout=90)
        with pytest.raises(RuntimeError, match="speech server exited"):
            s.start()


async def test_voice_replay_of_demo_calls_through_the_plugin_classes(server, tmp_path) -> None:
    """Recorded calls replayed in real time with the STT and TTS of the config's factory sections pointed at the
    server (embedded Silero VAD, scripted LLM): the transcripts are right and every turn has its latencies."""
    from workbench.core.config import EndpointConfig, WorkbenchConfig
    from workbench.faults.endpoint import Script, ScriptedEndpoint
    from workbench.models import ModelStack
    from workbench.workflows import Suite, arun, load_run
    from workbench.workflows.suite import Selection, VoiceOptions

    url = server.base_url
    suite = Suite(
        dataset=DATASET,
        mode="voice",
        conversations=Selection(ids=["c001", "c002"]),
        voice=VoiceOptions(variants=["piper"]),
    )
    with ScriptedEndpoint(Script(ttft_s=0.1, text="Sure, we open at eight.")) as ep:
        cfg = WorkbenchConfig(
            llm=EndpointConfig(kind="openai", base_url=ep.base_url, model="m"),
            stt={"use": "livekit.plugins.openai:STT", "base_url": url, "api_key": "unused", "model": "whisper-1"},
            tts={"use": "livekit.plugins.openai:TTS", "base_url": url, "api_key": "unused", "model": "tts-1"}
            | {"response_format": "pcm"},
            state_dir=tmp_path / "state",
        )
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=ModelStack(cfg), progress=False)
    df = load_run(res.path)
    print("\n", df[["conversation_id", "wer", "eou_delay_s", "stt_s", "tts_ttfb_s", "v2v_s"]])
    assert len(df) == 2 and df["error_kind"].isna().all(), df[["error_kind", "error"]]
    # tiny.en hears c002's "Lakeside" as "Late-Cide" on the embedded path too (WER 0.33): the same model, the same text
    assert df["realtime"].all() and df["wer"].mean() <= 0.2, df[["transcript", "wer"]]
    assert df[["stt_s", "tts_ttfb_s", "v2v_s"]].notna().all().all() and (df["agent_audio_s"] > 0).all()
    # the parts add up: voice-to-voice is the end of turn, the LLM's first chunk and the TTS's first audio
    parts = df["eou_delay_s"] + df["llm_ttfc_s"] + df["tts_ttfb_s"]
    assert ((df["v2v_s"] - parts).abs() < 0.1).all(), (df["v2v_s"].tolist(), parts.tolist())
