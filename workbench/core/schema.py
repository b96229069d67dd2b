"""The turn table: one row per strategy x conversation x turn x repetition.

This is the contract between the replay harness (which writes rows), scoring (which adds
columns) and analysis (which reads them). Times are seconds (float); a figure that was not
measured is ``NaN``/``None``, never 0. Voice-only columns are empty in text mode; latency
columns are empty on rows replayed faster than real time (``realtime`` is False).

The measured columns' metrics (label, unit, which way is better) are declared at the end of this
module into the catalogue of :mod:`workbench.core.metrics`, where analysis and gates read them.
Voice latency columns split voice-to-voice into stages (:data:`CRITICAL_PATH`, :func:`critical_path`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from workbench.core.metrics import Direction, Metric, declare

# name -> (pandas dtype, meaning)
COLUMNS: dict[str, tuple[str, str]] = {
    # identity
    "run_id": ("string", "run folder name under runs/"),
    "strategy": ("string", "strategy name as configured in the suite"),
    "mode": ("string", "'text' or 'voice'"),
    "conversation_id": ("string", "conversation id from conversations.jsonl"),
    "turn_index": ("int64", "0-based turn number inside the conversation"),
    "repetition": ("int64", "0-based repetition of the whole suite"),
    "voice": ("string", "voice mode: the recording variant played (e.g. piper, espeak, piper-8k); text: ''"),
    "tags": ("object", "list[str] conversation tags"),
    "started_at": ("string", "ISO-8601 UTC time the turn started"),
    # the dataset's side
    "user_text": ("string", "what the caller said (dataset text)"),
    "reference": ("string", "reference answer"),
    "reference_contexts": ("object", "list[str] documents that hold the answer (paths relative to the dataset)"),
    "facts": ("object", "list[str] must-mention facts"),
    "expected_tools": (
        "string",
        'JSON list of the tool calls the turn should make, [{"name", "args", "match": "subset"|"exact"}]; '
        "None: the dataset states no expectation, []: no tool may be called",
    ),
    # the agent's side
    "answer": ("string", "the agent's full reply text"),
    "contexts": ("object", "list[str] retrieved passage texts (empty for strategies without retrieval)"),
    "context_sources": ("object", "list[str] retrieved passage sources (paths relative to the dataset)"),
    "context_scores": ("object", "list[float] retrieval scores"),
    "llm_ttfc_s": ("float64", "LLM time to first chunk, from the request to the first text delta"),
    "llm_total_s": ("float64", "LLM time from the request to the end of the stream"),
    "prompt_tokens": ("float64", "prompt tokens (endpoint usage when reported, else counted locally)"),
    "completion_tokens": ("float64", "completion tokens (same sources)"),
    "tokens_source": ("string", "'usage' or 'local'"),
    "error_kind": ("string", "None, or a short fault name: timeout, http_500, connection, stream_cut, bad_audio, ..."),
    "error": ("string", "error message (never contains secrets)"),
    "fallback": ("string", "None, the fallback strategy's name, or 'apology'"),
    "partial": ("boolean", "the fault came after some of the answer was already produced"),
    "recovery_s": ("float64", "after a fault: request to the first words of the fallback or apology"),
    "history_dropped": ("int64", "history items trimmed to fit the prompt budget"),
    "tool_calls": (
        "string",
        "JSON list of the turn's tool calls in the order they started: order, name, call_id, arguments (parsed "
        "JSON), output (what the model read), error (None, the exception's message, 'timeout' or 'cancelled'), "
        "mocked (the dataset's tool_results answered), started_s and ended_s (seconds from the turn start)",
    ),
    "tool_names": ("object", "list[str] names of the tools called, in order"),
    "tool_errors": ("int64", "tool calls of the turn that raised, timed out or were cancelled"),
    "tools_not_passed": ("object", "list[str] the agent's tools this strategy did not give its model (AutoGen, AG2)"),
    "realtime": ("boolean", "voice audio was paced in real time, so latency columns are valid"),
    # voice mode (NaN in text mode)
    "audio_path": ("string", "user audio file, relative to the dataset"),
    "speech_end_s": ("float64", "end of user speech, seconds into the turn's audio (from the recording)"),
    "eou_delay_s": ("float64", "end of user speech to the end-of-turn decision (LiveKit's, when it reports one)"),
    "transcript": ("string", "what STT heard"),
    "wer": ("float64", "word error rate of transcript vs user_text (number and case normalised)"),
    "stt_s": ("float64", "end of user speech to the final transcript the end of turn used (runs inside eou_delay_s)"),
    "llm_start_s": (
        "float64",
        "end-of-turn decision to the LLM request: the agent's on_user_turn_completed hook and scheduling "
        "(in a tool-calling turn, also the steps before the one whose words were spoken first)",
    ),
    "llm_ttfs_s": (
        "float64",
        "LLM request to its first sentence handed to TTS (LiveKit's llm_node_ttfs, anchored on the request as "
        "llm_ttfc_s is): what TTS waits for; holds llm_ttfc_s",
    ),
    "tts_ttfb_s": ("float64", "first sentence into TTS to its first audio out"),
    "playout_s": ("float64", "TTS first audio to the first agent frame played: forwarding and output buffering"),
    "unattributed_s": (
        "float64",
        "v2v_s minus the critical-path stages (CRITICAL_PATH); about 0 when every stage was measured, else the "
        "time of the stages that were not",
    ),
    "v2v_s": ("float64", "voice-to-voice: end of user speech to first agent audio frame played"),
    "agent_audio_s": ("float64", "duration of the agent's spoken reply"),
    "interruptions": ("int64", "times the agent was interrupted in this turn"),
    # end of turn against pauses: was the caller cut off (datasets/dianachat_pauses holds turns with mid-turn pauses)
    "user_turns": (
        "Int64",
        "user messages LiveKit committed during this turn (its end-of-turn decisions): 1 is right, 2 or more means "
        "the caller's turn was split at a pause, 0 that none was committed",
    ),
    "cut_off": (
        "boolean",
        "the caller was cut off: an end-of-turn decision or the agent's first audio came before the recording's end "
        "of speech (a pause taken for the end of the turn), or the turn was split (user_turns > 1); real-time rows "
        "only",
    ),
    # the call as the caller hears it (workbench.replay.call): real-time voice rows only
    "call_audio": (
        "string",
        "the conversation's stereo call recording (caller left, agent right, one clock), relative to the run folder",
    ),
    "call_offset_s": ("float64", "where this turn's audio starts in call_audio, seconds"),
    "heard_v2v_s": (
        "float64",
        "voice-to-voice read from the recording's signal: the caller's last audio above -40 dBFS (left) to the "
        "onset of agent audio after it (right); checks v2v_s",
    ),
    "overlaps": ("Int64", "stretches of the turn where caller and agent are both audible"),
    "overlap_s": ("float64", "seconds of the turn where caller and agent are both audible"),
    "long_silences": ("Int64", "stretches of 2 s or more with neither side audible after the caller stopped"),
    # barge-in: the caller talks over the agent's previous reply (dataset field barge_in_s)
    "barge_in_s": ("float64", "dataset: this turn's audio starts this long into the agent's previous reply"),
    "yielded": ("boolean", "barge-in turns: the agent's audio stopped after the caller started (None: no overlap)"),
    "yield_s": ("float64", "barge-in turns: the caller's first words to the agent's audio stopping (yielded only)"),
    "false_interruption": (
        "boolean",
        "barge-in turns: the agent stopped although the turn is noise or a backchannel (expect_yield false)",
    ),
    "lk_metrics": (
        "string",
        "LiveKit's own metrics (JSON), kept beside ours: its metric events by type, and under 'turn' the user "
        "and assistant messages' per-turn metrics",
    ),
    # where the turn ran (workbench.workflows.executors); empty on rows of the in-process executor
    "executor_node": ("string", "Ray node id of the slot that replayed the turn; None: the driver, in-process"),
    "executor_slot": ("Int64", "index of the Ray slot (actor) that replayed the turn; empty: in-process"),
    "slot_load": (
        "float64",
        "CPU use of the slot's own process and its children (its LLM server) while the turn ran, % of one CPU "
        "(psutil; 150 = 1.5 CPUs); NaN: in-process. Work of the slot's concurrent jobs counts too",
    ),
    "node_load": (
        "float64",
        "CPU use of the slot's node while the turn ran, % of all its CPUs (psutil); NaN: in-process. High with a "
        "low slot_load flags a latency that other work on the node may have inflated",
    ),
}

KEY = ("strategy", "mode", "voice", "conversation_id", "turn_index", "repetition")
"""The columns that identify a row: resume skips rows whose key is already stored."""

CRITICAL_PATH = ("eou_delay_s", "llm_start_s", "llm_ttfs_s", "tts_ttfb_s", "playout_s")
"""Voice-to-voice as consecutive stages from the end of user speech: ``v2v_s`` is their sum plus
``unattributed_s``. Two more stages nest inside them, because each waits for the other: ``stt_s`` in
``eou_delay_s`` (the turn ends only with a transcript) and ``llm_ttfc_s`` in ``llm_ttfs_s`` (a sentence
starts with the first chunk). docs/latency.md explains how each is measured."""

SLICES = (
    "stt_s",
    "eou_after_stt",
    "llm_start_s",
    "llm_ttfc_s",
    "llm_sentence_rest",
    "tts_ttfb_s",
    "playout_s",
    "unattributed_s",
)
"""The slices :func:`critical_path` cuts voice-to-voice into, in time order."""


def _seconds(v: Any) -> float | None:
    """A measured figure, or None for a missing one (None, NaN, pd.NA)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def critical_path(row: Mapping[str, Any]) -> dict[str, float] | None:
    """A voice row's voice-to-voice cut into consecutive :data:`SLICES` that add up to it exactly.

    One rule for the harness (``unattributed_s``) and the report's breakdown, so the two cannot disagree.
    A stage missing on the row counts 0 and its time lands in ``unattributed_s``; without ``llm_ttfs_s`` the
    first chunk still counts. None when the row has no voice-to-voice figure.
    """
    v2v = _seconds(row.get("v2v_s"))
    if v2v is None:
        return None
    eou = _seconds(row.get("eou_delay_s")) or 0.0
    stt = min(max(_seconds(row.get("stt_s")) or 0.0, 0.0), max(eou, 0.0))
    ttfc, ttfs = _seconds(row.get("llm_ttfc_s")), _seconds(row.get("llm_ttfs_s"))
    first_chunk = (ttfc or 0.0) if ttfs is None else min(max(ttfc or 0.0, 0.0), max(ttfs, 0.0))
    out = {
        "stt_s": stt,
        "eou_after_stt": eou - stt,
        "llm_start_s": _seconds(row.get("llm_start_s")) or 0.0,
        "llm_ttfc_s": first_chunk,
        "llm_sentence_rest": 0.0 if ttfs is None else ttfs - first_chunk,
        "tts_ttfb_s": _seconds(row.get("tts_ttfb_s")) or 0.0,
        "playout_s": _seconds(row.get("playout_s")) or 0.0,
    }
    out["unattributed_s"] = v2v - sum(out.values())
    return out


def _measured(name: str, label: str, unit: str, direction: Direction | None, headline: bool = False) -> Metric:
    """A measured column's metric; its meaning is the column's own description above."""
    return Metric(name, label, unit, direction, COLUMNS[name][1], headline)


MEASURED: tuple[Metric, ...] = (
    _measured("llm_ttfc_s", "LLM first chunk", "s", "lower"),
    _measured("llm_total_s", "LLM whole answer", "s", "lower"),
    _measured("prompt_tokens", "prompt tokens", "tokens", "lower"),
    _measured("completion_tokens", "completion tokens", "tokens", "lower"),
    _measured("recovery_s", "recovery after a fault", "s", "lower"),
    _measured("history_dropped", "history items dropped", "items", "lower"),
    _measured("tool_errors", "tool errors", "calls", "lower"),
    _measured("speech_end_s", "end of user speech", "s", None),  # a property of the recording
    _measured("eou_delay_s", "end of turn", "s", "lower"),
    _measured("wer", "word error rate", "", "lower", headline=True),
    _measured("stt_s", "STT final", "s", "lower"),
    _measured("llm_start_s", "LLM request start", "s", "lower"),
    _measured("llm_ttfs_s", "LLM first sentence", "s", "lower"),
    _measured("tts_ttfb_s", "TTS first audio", "s", "lower"),
    _measured("playout_s", "playout start", "s", "lower"),
    _measured("unattributed_s", "unattributed", "s", None),  # a check on the measurement, not an outcome
    _measured("v2v_s", "voice to voice", "s", "lower"),
    _measured("agent_audio_s", "agent speech", "s", None),  # a long answer is not worse in itself
    _measured("interruptions", "interruptions", "", "lower"),
    _measured("user_turns", "user turns committed", "", None),  # 1 is right: neither more nor fewer is better
    _measured("call_offset_s", "turn start in the call", "s", None),  # a position, not an outcome
    _measured("barge_in_s", "barge-in point", "s", None),  # the dataset's, not an outcome
    _measured("heard_v2v_s", "voice to voice, heard", "s", "lower"),
    _measured("overlaps", "overlaps", "", "lower"),
    _measured("overlap_s", "overlap", "s", "lower"),
    _measured("long_silences", "long silences", "", "lower"),
    _measured("yield_s", "time to yield", "s", "lower"),
    _measured("slot_load", "slot CPU load", "%", None),  # a condition of the measurement, not an outcome
    _measured("node_load", "slot node CPU load", "%", None),
)
"""Every numeric column the harness measures (identity columns such as ``turn_index`` are not metrics)."""

declare(*MEASURED)
