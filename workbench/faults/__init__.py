"""Fault injection: an OpenAI-compatible endpoint that streams a script (slow, cut, refused, malformed), and
speech components with exact delays or failures, so a run can show what callers hear when a part misbehaves."""

from workbench.faults.endpoint import (
    FAULTS,
    EndpointProcess,
    RecordedRequest,
    Script,
    ScriptedEndpoint,
    ToolCall,
    closed_port_url,
    last_user_text,
    split_tokens,
)

__all__ = [
    "FAULTS",
    "EndpointProcess",
    "RecordedRequest",
    "Script",
    "ScriptedEndpoint",
    "ToolCall",
    "closed_port_url",
    "last_user_text",
    "split_tokens",
]
