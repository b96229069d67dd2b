"""Per-session handles on shared components (strategies, speech models).

An ``AgentSession`` subscribes to its LLM's, STT's and TTS's ``metrics_collected`` and ``error``
events. The workbench shares one strategy and one copy of each speech model across concurrent
sessions (the harness runs many at once), so with one emitter every session would receive every
other session's metrics and errors: a failing STT in one call would end a turn in another, usage
would be counted once per session, and the cost of every event would grow with concurrency.
"""

from __future__ import annotations

import copy
from typing import Any, Self

from livekit import rtc


class SessionHandles:
    """Mixin for an ``rtc.EventEmitter`` component that is shared by concurrent sessions."""

    def for_session(self) -> Self:
        """The same component (weights, clients, executor, traces) with its own event emitter.

        A shallow copy: components keep their state in objects built in ``__init__``, which the
        copy shares; only the emitter's listener table is new.
        """
        handle = copy.copy(self)
        rtc.EventEmitter.__init__(handle)  # type: ignore[arg-type]
        return handle


def for_session(component: Any) -> Any:
    """``component.for_session()`` when it is one of ours, else the component itself (plugins, fakes)."""
    return component.for_session() if isinstance(component, SessionHandles) else component
