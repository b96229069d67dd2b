"""Retrieval quality against a dataset's reference contexts: does top-k hold the documents an answer needs?"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RetrievalCase:
    """A user turn with the documents (``knowledge/<file>.md``) its reference answer relies on."""

    conversation: str
    position: int  # 0 = opening turn (self-contained); later turns may lean on the history
    user: str
    contexts: frozenset[str]


def load_turns(conversations: str | Path) -> list[RetrievalCase]:
    """Turns of a ``conversations.jsonl`` that have reference contexts (out-of-scope turns have none)."""
    turns = []
    for line_no, line in enumerate(Path(conversations).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            conv = json.loads(line)
            for i, t in enumerate(conv["turns"]):
                if t.get("contexts"):
                    turns.append(RetrievalCase(conv["id"], i, t["user"], frozenset(t["contexts"])))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{conversations}:{line_no}: not a conversation record: {e}") from e
    return turns


def context_recall(index: Any, turns: list[RetrievalCase], top_k: int = 3) -> dict[str, float]:
    """Mean share of each turn's reference documents found among the top-k passages' sources.

    ``all`` counts every turn, ``opening`` only first turns; follow-ups ("And on Saturdays?") often
    cannot be answered from their own words, which is a property of the query, not the index.
    """
    scores = [
        (t.position, len({p.source for p in index.retrieve(t.user, top_k)} & t.contexts) / len(t.contexts))
        for t in turns
    ]
    opening = [s for pos, s in scores if pos == 0]
    return {
        "all": sum(s for _, s in scores) / len(scores) if scores else 0.0,
        "opening": sum(opening) / len(opening) if opening else 0.0,
        "turns": float(len(scores)),
        "opening_turns": float(len(opening)),
    }
