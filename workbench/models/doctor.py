"""``workbench doctor``: load every component, run one tiny real inference, report a table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from livekit.agents import llm

from workbench.core.wer import wer
from workbench.models.assets import MissingAssetError
from workbench.models.audio import frames_to_mono_f32, pcm_to_frames
from workbench.models.stack import ModelStack

PROBE_TEXT = "Our clinic opens at eight in the morning."


@dataclass
class Check:
    component: str
    model: str = ""
    load_s: float | None = None
    metric: str = ""
    status: str = "OK"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


async def _check_llm(stack: ModelStack) -> Check:
    ep, load = _timed(stack.endpoint)
    lm = stack.llm()
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Say hello in three words.")
    t0 = time.perf_counter()
    first, n = None, 0
    async with lm.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first = first or time.perf_counter() - t0
                n += 1
    await lm.aclose()
    if first is None:
        raise RuntimeError("the LLM streamed no text")
    return Check("llm", f"{ep.model} @ {ep.base_url}", load, f"first chunk {first * 1000:.0f} ms, {n} chunks")


async def _check_tts(stack: ModelStack, kind: str) -> tuple[Check, list]:
    tts, load = _timed(lambda: stack.tts(kind))
    t0 = time.perf_counter()
    frames, first = [], None
    async for audio in tts.synthesize(PROBE_TEXT):
        first = first or time.perf_counter() - t0
        frames.append(audio.frame)
    if not frames:
        raise RuntimeError("no audio")
    return Check(f"tts ({kind})", tts.model, load, f"first audio {first * 1000:.0f} ms"), frames


async def _check_stt(stack: ModelStack, frames: list) -> Check:

    stt, load = _timed(stack.stt)
    pcm = frames_to_mono_f32(frames, 16000)
    t0 = time.perf_counter()
    event = await stt.recognize(frames)
    rtf = (time.perf_counter() - t0) / (len(pcm) / 16000)
    text = event.alternatives[0].text if event.alternatives else ""
    return Check("stt", stt.model, load, f"RTF {rtf:.2f}, WER {wer(PROBE_TEXT, text):.0%}")


async def _check_vad(stack: ModelStack, frames: list) -> Check:
    from livekit.agents import vad

    v, load = _timed(stack.vad)
    pcm = np.concatenate([np.zeros(8000, np.float32), frames_to_mono_f32(frames, 16000), np.zeros(16000, np.float32)])
    stream = v.stream()
    t0 = time.perf_counter()
    for f in pcm_to_frames(pcm, 16000):
        stream.push_frame(f)
    stream.end_input()
    found = [e.type async for e in stream if e.type != vad.VADEventType.INFERENCE_DONE]
    ms_per_window = (time.perf_counter() - t0) * 1000 / (len(pcm) / 512)
    if vad.VADEventType.START_OF_SPEECH not in found:
        raise RuntimeError("no speech found in synthetic speech")
    return Check("vad", "silero", load, f"{ms_per_window:.2f} ms per 32 ms window")


def _check_embeddings(stack: ModelStack) -> Check:
    emb, load = _timed(stack.embedder)
    t0 = time.perf_counter()
    near = emb.similarity("When do you open?", "What are your opening hours?")
    far = emb.similarity("When do you open?", "The parking garage is on Elm Street.")
    ms = (time.perf_counter() - t0) * 1000 / 2
    if near <= far:
        raise RuntimeError(f"paraphrase {near:.2f} not above unrelated {far:.2f}")
    return Check("embeddings", emb.name, load, f"{ms:.0f} ms per pair")


def _failed(component: str, e: BaseException) -> Check:
    status = "MISSING" if isinstance(e, MissingAssetError) else "FAILED"
    return Check(component, status=status, detail=str(e).splitlines()[0][:300])


async def run_checks(stack: ModelStack) -> list[Check]:
    """Every component in turn; one failure never hides the others."""
    checks: list[Check] = []
    try:
        checks.append(await _check_llm(stack))
    except Exception as e:
        checks.append(_failed("llm", e))
    frames: list = []
    for kind in ("piper", "espeak"):
        try:
            check, out = await _check_tts(stack, kind)
            checks.append(check)
            frames = frames or out
        except Exception as e:
            checks.append(_failed(f"tts ({kind})", e))
    for name, coro in (("stt", _check_stt), ("vad", _check_vad)):
        try:
            if not frames:
                raise RuntimeError("no TTS audio to test with")
            checks.append(await coro(stack, frames))
        except Exception as e:
            checks.append(_failed(name, e))
    try:
        checks.append(_check_embeddings(stack))
    except Exception as e:
        checks.append(_failed("embeddings", e))
    try:
        detector, load = _timed(stack.turn_detection)
        name = "vad silence" if detector == "vad" else f"livekit {type(detector).__name__}"
        checks.append(Check("end of turn", name, load, f"min delay {stack.config.turn.min_endpointing_delay:.2f} s"))
    except Exception as e:
        checks.append(_failed("end of turn", e))
    return checks


def doctor(stack: ModelStack | None = None) -> list[Check]:
    own = stack is None
    stack = stack or ModelStack()
    try:
        return asyncio.run(run_checks(stack))
    finally:
        if own:
            stack.close()
