"""Helpers for your own tests: the scripted endpoint and the speech components with known delays.

They are the fault-injection components of :mod:`workbench.faults`, re-exported under the name tests look for.
Tiny datasets and model stacks to run them on are in :mod:`workbench.testing.worlds`.
"""

from workbench.faults.endpoint import RecordedRequest, Script, ScriptedEndpoint, ToolCall, closed_port_url, split_tokens
from workbench.faults.speech import EnergyVAD, FailingSTT, FailingTTS, FixedDelaySTT, FixedDelayTTS, ToneSTT, tone

__all__ = [
    "EnergyVAD",
    "FailingSTT",
    "FailingTTS",
    "FixedDelaySTT",
    "FixedDelayTTS",
    "RecordedRequest",
    "Script",
    "ScriptedEndpoint",
    "ToneSTT",
    "ToolCall",
    "closed_port_url",
    "split_tokens",
    "tone",
]
