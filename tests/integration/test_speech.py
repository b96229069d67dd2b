"""Piper speaks, Whisper hears it, Silero finds it, MiniLM understands paraphrase."""

from __future__ import annotations

import numpy as np
from livekit.agents import vad

from workbench.core.wer import wer
from workbench.models.audio import frames_to_mono_f32, pcm_to_frames

SENTENCE = "Our Main Street clinic opens at eight in the morning on weekdays."


def _centroid(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm))
    return float((spectrum * np.fft.rfftfreq(len(pcm), 1 / 16000)).sum() / spectrum.sum())


async def _speak(stack, kind: str = "piper") -> list:
    return [a.frame async for a in stack.tts(kind).synthesize(SENTENCE)]


async def test_piper_to_whisper_round_trip(stack) -> None:
    frames = await _speak(stack)
    assert frames[0].sample_rate == 22050
    duration = sum(f.duration for f in frames)
    assert 2.0 < duration < 8.0
    event = await stack.stt().recognize(frames)
    assert wer(SENTENCE, event.alternatives[0].text) < 0.15


async def test_piper_deterministic_mode_is_bit_identical(stack) -> None:
    a, b = await _speak(stack), await _speak(stack)
    assert b"".join(bytes(f.data) for f in a) == b"".join(bytes(f.data) for f in b)


async def test_espeak_is_a_second_intelligible_voice(stack) -> None:
    frames = await _speak(stack, "espeak")
    piper = frames_to_mono_f32(await _speak(stack), 16000)
    espeak = frames_to_mono_f32(frames, 16000)
    # a genuinely different voice: the spectral centroid moves (both voices are deterministic)
    assert abs(_centroid(piper) - _centroid(espeak)) / _centroid(piper) > 0.05
    event = await stack.stt().recognize(frames)
    # robotic formant speech: Whisper tiny.en gets about half the words (measured 0.50, deterministic)
    assert wer(SENTENCE, event.alternatives[0].text) < 0.6


async def test_silero_finds_speech_boundaries_within_150ms(stack) -> None:
    speech = frames_to_mono_f32(await _speak(stack), 16000)
    voiced = np.nonzero(np.abs(speech) > 0.01)[0]
    speech = speech[voiced[0] : voiced[-1] + 1]  # true speech = the voiced span, padded with known silence
    lead, tail = 1.3, 1.5
    audio = np.concatenate([np.zeros(int(lead * 16000), np.float32), speech, np.zeros(int(tail * 16000), np.float32)])
    true_start, true_end = lead, lead + len(speech) / 16000
    stream = stack.vad().stream()
    for frame in pcm_to_frames(audio, 16000):
        stream.push_frame(frame)
    stream.end_input()
    starts, ends = [], []
    async for ev in stream:
        if ev.type == vad.VADEventType.START_OF_SPEECH:
            starts.append(ev.timestamp - ev.speech_duration)
        elif ev.type == vad.VADEventType.END_OF_SPEECH:
            ends.append(ev.timestamp - ev.silence_duration)
    assert len(starts) >= 1 and len(ends) >= 1
    assert abs(starts[0] - true_start) < 0.150, (starts, true_start)
    assert abs(ends[-1] - true_end) < 0.150, (ends, true_end)


def test_minilm_scores_paraphrase_above_unrelated(stack) -> None:
    emb = stack.embedder()
    q = "What time does the clinic open on Saturday?"
    para = emb.similarity(q, "When do you open on Saturdays?")
    unrelated = emb.similarity(q, "Parking is free in the garage behind the building.")
    assert para > unrelated + 0.2
    vecs = emb.embed([q, q])
    assert vecs.shape == (2, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
