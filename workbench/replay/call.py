"""The call as the caller hears it: one stereo recording per voice conversation, and what its signal says.

Left is what the replay microphone played (the caller), right the agent's audio at the instant the emulated
speaker plays it, both on one clock (the microphone's first frame is 0). Latency read back from the signal
(end of caller speech by energy to the onset of agent audio) checks the event-timed ``v2v_s`` independently,
and overlaps and dead air are counted the way a listener would notice them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

WINDOW_S = 0.01
THRESHOLD = 0.01  # RMS of a 10 ms window, about -40 dBFS: speech or agent audio above it is "active"
LONG_SILENCE_S = 2.0


@dataclass
class AgentReply:
    """One reply as the emulated speaker played it: wall-clock start, its samples, how much of it played."""

    start: float
    chunks: list[np.ndarray] = field(default_factory=list)
    played_s: float | None = None  # None while it is still playing
    end: float | None = None  # wall clock when its audio stopped
    interrupted: bool = False


def render(caller: Sequence[np.ndarray], wall0: float, replies: Sequence[AgentReply], rate: int) -> np.ndarray:
    """The call so far as float32 ``(n, 2)``: the caller's frames back to back from ``wall0``, each reply
    placed at its start and cut where it stopped playing."""
    left = np.concatenate(caller).astype(np.float32) / 32768.0 if caller else np.zeros(0, np.float32)
    placed: list[tuple[int, np.ndarray]] = []
    for r in replies:
        audio = np.concatenate(r.chunks).astype(np.float32) / 32768.0 if r.chunks else np.zeros(0, np.float32)
        if r.played_s is not None:
            audio = audio[: round(r.played_s * rate)]
        placed.append((max(0, round((r.start - wall0) * rate)), audio))
    n = max([len(left), *(at + len(a) for at, a in placed)])
    out = np.zeros((n, 2), np.float32)
    out[: len(left), 0] = left
    for at, a in placed:
        out[at : at + len(a), 1] += a
    return out


def wav_bytes(stereo: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of a float ``(n, 2)`` call."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(stereo, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def continue_call(before: bytes, after: bytes) -> tuple[bytes, float]:
    """A resumed call's recording: the interrupted session's file, then the resumed one's; and the seconds the
    resumed part's offsets move by. The seam is where the session was lost."""
    first, rate = sf.read(io.BytesIO(before), dtype="float32", always_2d=True)
    second, rate2 = sf.read(io.BytesIO(after), dtype="float32", always_2d=True)
    if rate != rate2:
        raise ValueError(f"a resumed call at {rate2} Hz cannot continue one recorded at {rate} Hz")
    return wav_bytes(np.concatenate([first, second]), rate), len(first) / rate


def _active(x: np.ndarray, rate: int) -> np.ndarray:
    win = int(rate * WINDOW_S)
    n = len(x) // win
    if n == 0:
        return np.zeros(0, bool)
    return np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1)) > THRESHOLD


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist(), strict=True))


def heard_columns(
    stereo: np.ndarray, rate: int, start_s: float, end_s: float, long_silence_s: float = LONG_SILENCE_S
) -> dict[str, Any]:
    """What the recording says about one turn, the span ``[start_s, end_s)`` of the call.

    ``heard_v2v_s``: the caller's last sample above the threshold to the agent's first sample above it in an
    onset (right silent, then active) after it; ``overlaps``/``overlap_s``: runs of 10 ms windows where both
    channels are active; ``long_silences``: runs where both are silent for ``long_silence_s`` or more after the
    caller's speech ended (dead air the caller waits through).
    """
    a, b = int(start_s * rate), int(end_s * rate)
    win = int(rate * WINDOW_S)
    left, right = stereo[a:b, 0], stereo[a:b, 1]
    la, ra = _active(left, rate), _active(right, rate)
    out: dict[str, Any] = {"heard_v2v_s": None, "overlaps": 0, "overlap_s": 0.0, "long_silences": 0}
    both = _runs(la & ra)
    out["overlaps"], out["overlap_s"] = len(both), sum(e - s for s, e in both) * WINDOW_S
    if not la.any():
        return out
    last = int(np.nonzero(la)[0][-1])
    seg = np.abs(left[last * win : (last + 1) * win])
    caller_end = (
        last * win + int(np.nonzero(seg > THRESHOLD)[0][-1]) + 1 if (seg > THRESHOLD).any() else (last + 1) * win
    )
    first_after = caller_end // win
    for s, _ in _runs(ra):
        if s >= first_after and s > 0:  # a run starting at 0 began before the turn: not an onset
            seg = np.abs(right[s * win : (s + 1) * win])
            onset = s * win + (int(np.nonzero(seg > THRESHOLD)[0][0]) if (seg > THRESHOLD).any() else 0)
            if onset >= caller_end:
                out["heard_v2v_s"] = (onset - caller_end) / rate
                break
    quiet = ~(la | ra)
    quiet[: last + 1] = False
    min_windows = round(long_silence_s / WINDOW_S)
    out["long_silences"] = sum(1 for s, e in _runs(quiet) if e - s >= min_windows)
    return out


__all__ = ["LONG_SILENCE_S", "AgentReply", "heard_columns", "render", "wav_bytes"]
