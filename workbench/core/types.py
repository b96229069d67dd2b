"""Data that travels between layers: a retrieved passage and a turn's trace.

Below knowledge and strategies, so the index can return passages and the harness can read traces
without either importing the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Passage:
    """A retrieved passage travelling with the turn, so the harness can score retrieval."""

    text: str
    source: str
    score: float


@dataclass
class TurnTrace:
    """What happened in one turn, for the harness: retrieval, fault, fallback, timing."""

    strategy: str
    user_message_id: str | None
    started: float = field(default_factory=time.perf_counter)
    first_chunk_s: float | None = None
    total_s: float | None = None
    contexts: list[Passage] = field(default_factory=list)
    error_kind: str | None = None
    error: str | None = None
    fallback: str | None = None  # strategy name or "apology"
    partial: bool = False  # the fault came after some text was already spoken
    history_dropped: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
