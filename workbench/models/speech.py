"""Voice activity and end of turn: Silero VAD, and the turn-detection choice for a session."""

from __future__ import annotations

from typing import Any

from livekit.agents import vad

from workbench.core.config import TurnConfig, VADConfig


def load_vad(config: VADConfig | None = None) -> vad.VAD:
    """Silero VAD from the onnx file inside ``livekit-plugins-silero`` (no download)."""
    from livekit.plugins import silero

    c = config or VADConfig()
    return silero.VAD.load(
        min_speech_duration=c.min_speech_duration,
        min_silence_duration=c.min_silence_duration,
        activation_threshold=c.activation_threshold,
    )


def turn_detection(config: TurnConfig | None = None) -> Any:
    """What ``AgentSession(turn_detection=...)`` gets: ``"vad"`` or LiveKit's local TurnDetector.

    VAD is the default because it is reproducible; the TurnDetector often waits the full
    max endpointing delay on synthetic audio (field notes).
    """
    c = config or TurnConfig()
    if c.mode == "vad":
        return "vad"
    from livekit.agents.inference import TurnDetector

    return TurnDetector()
