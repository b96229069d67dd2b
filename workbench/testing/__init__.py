"""Test machinery shared by unit tests, fault-injection runs and benchmarks."""

from workbench.testing.scripted_endpoint import (
    RecordedRequest,
    Script,
    ScriptedEndpoint,
    ToolCall,
    closed_port_url,
    split_tokens,
)

__all__ = ["RecordedRequest", "Script", "ScriptedEndpoint", "ToolCall", "closed_port_url", "split_tokens"]
