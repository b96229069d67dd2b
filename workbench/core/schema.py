"""The turn table: one row per strategy x conversation x turn x repetition.

This is the contract between the replay harness (which writes rows), scoring (which adds
columns) and analysis (which reads them). Times are seconds (float); a figure that was not
measured is ``NaN``/``None``, never 0. Voice-only columns are empty in text mode; latency
columns are empty on rows replayed faster than real time (``realtime`` is False).

The measured columns' metrics (label, unit, which way is better) are declared at the end of this
module into the catalogue of :mod:`workbench.core.metrics`, where analysis and gates read them.
"""

from __future__ import annotations

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
    "eou_delay_s": ("float64", "end of user speech to the end-of-turn decision"),
    "transcript": ("string", "what STT heard"),
    "wer": ("float64", "word error rate of transcript vs user_text (number and case normalised)"),
    "stt_s": ("float64", "end of user speech to final transcript"),
    "tts_ttfb_s": ("float64", "first text into TTS to first audio byte out"),
    "v2v_s": ("float64", "voice-to-voice: end of user speech to first agent audio frame played"),
    "agent_audio_s": ("float64", "duration of the agent's spoken reply"),
    "interruptions": ("int64", "times the agent was interrupted in this turn"),
    "lk_metrics": ("string", "LiveKit's own per-turn metrics (JSON), kept beside ours"),
    # where the turn ran (workbench.workflows.executors); empty on rows of the in-process executor
    "executor_node": ("string", "Ray node id of the slot that replayed the turn; None: the driver, in-process"),
    "executor_slot": ("Int64", "index of the Ray slot (actor) that replayed the turn; empty: in-process"),
    "slot_load": (
        "float64",
        "CPU use of the slot's node while the turn ran, % of all its CPUs (psutil); NaN: in-process. A high value "
        "flags a latency that other work on the node may have inflated",
    ),
}

KEY = ("strategy", "mode", "voice", "conversation_id", "turn_index", "repetition")
"""The columns that identify a row: resume skips rows whose key is already stored."""


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
    _measured("tts_ttfb_s", "TTS first audio", "s", "lower"),
    _measured("v2v_s", "voice to voice", "s", "lower"),
    _measured("agent_audio_s", "agent speech", "s", None),  # a long answer is not worse in itself
    _measured("interruptions", "interruptions", "", "lower"),
    _measured("slot_load", "slot node CPU load", "%", None),  # a condition of the measurement, not an outcome
)
"""Every numeric column the harness measures (identity columns such as ``turn_index`` are not metrics)."""

declare(*MEASURED)
