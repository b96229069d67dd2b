"""The ``hermes-tools`` chat format (workbench/models/chat_formats.py) without a model.

Why these tests: the format is what lets the embedded models call tools through the OpenAI API, and it works on a
stream, so the cases that matter are where a piece boundary falls (a call split over chunks, a ``{`` in ordinary
text, text before a call) and what a malformed call becomes (text, never a silent drop). A fake ``Llama`` stands in
for the model so the handler's routing is checked too; tests/integration/test_tool_calling_real.py runs a real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench.core.config import EndpointConfig
from workbench.models.chat_formats import (
    NAME,
    HermesSplitter,
    hermes_tools_handler,
    parse_tool_calls,
    register,
    split_stream,
)

CANCEL = '{"name": "cancel", "arguments": {"booking_id": "B-102"}}'


def chunks(*pieces: str, finish: str = "stop") -> Iterator[dict[str, Any]]:
    """Chat-completion chunks as llama-cpp-python's template handler streams them: role, text pieces, finish."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}]}
    for p in pieces:
        yield {**base, "choices": [{"index": 0, "delta": {"content": p}, "logprobs": None, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]}


def collect(out: Iterator[dict[str, Any]]) -> tuple[str, list[tuple[str, dict[str, Any]]], str | None]:
    text, calls, reason = "", [], None
    for c in out:
        choice = c["choices"][0]
        text += choice["delta"].get("content") or ""
        for tc in choice["delta"].get("tool_calls") or []:
            assert tc["id"].startswith("call_") and tc["type"] == "function"
            calls.append((tc["function"]["name"], json.loads(tc["function"]["arguments"])))
        reason = choice["finish_reason"] or reason
    return text, calls, reason


def test_parse_reads_tagged_untagged_several_and_string_arguments() -> None:
    assert parse_tool_calls(f"<tool_call>\n{CANCEL}\n</tool_call>") == [("cancel", {"booking_id": "B-102"})]
    assert parse_tool_calls(f"\n{CANCEL}\n") == [("cancel", {"booking_id": "B-102"})]  # tags as special tokens
    two = f'{CANCEL}\n<tool_call>{{"name": "book", "arguments": "{{\\"day\\": \\"friday\\"}}"}}</tool_call>'
    assert parse_tool_calls(two) == [("cancel", {"booking_id": "B-102"}), ("book", {"day": "friday"})]
    # the 1.5B GGUF's template shows its example in doubled braces, and the model copies it (one brace too many)
    assert parse_tool_calls("{{" + CANCEL[1:] + "}}}") == [("cancel", {"booking_id": "B-102"})]
    for not_calls in ('{"name": "cancel", "arguments": {"booking_id"', '{"answer": 1}', f"{CANCEL} thanks", ""):
        assert parse_tool_calls(not_calls) is None


@pytest.mark.parametrize(
    "pieces",
    [
        [CANCEL],
        ["<tool", "_call>\n{", '"na', 'me": "cancel", "arguments": {"booking_id": "B-102"}}\n</tool_call>'],
        ["\n", "{", ' "name"', ': "cancel", "arguments": {"booking_id": "B-102"}}'],
        ["{", "{", '"name": "cancel", "arguments": {"booking_id": "B-102"}}}}'],
    ],
)
def test_a_streamed_call_becomes_tool_calls_whatever_the_piece_boundaries(pieces: list[str]) -> None:
    text, calls, reason = collect(split_stream(chunks(*pieces)))
    assert (text.strip(), calls, reason) == ("", [("cancel", {"booking_id": "B-102"})], "tool_calls")


def test_text_streams_as_it_comes_and_a_brace_that_starts_no_call_is_released() -> None:
    s = HermesSplitter()
    assert s.feed("Sure, ") == "Sure, "
    assert s.feed("{") == ""  # may start a call: held
    assert s.feed("x} and <b>") == "{x} and <b>"
    assert s.feed(" done <") == " done "
    assert s.finish() == ("<", [])


def test_text_before_a_call_is_said_and_the_call_is_parsed() -> None:
    text, calls, reason = collect(split_stream(chunks("Let me cancel that. ", CANCEL)))
    assert (text, calls, reason) == ("Let me cancel that. ", [("cancel", {"booking_id": "B-102"})], "tool_calls")


def test_a_call_that_does_not_parse_comes_back_as_text() -> None:
    broken = '{"name": "cancel", "arguments": {"booking_id": "B-1'  # cut off by max_tokens
    text, calls, reason = collect(split_stream(chunks(broken, finish="length")))
    assert (text, calls, reason) == (broken, [], "length")


class FakeLlama:
    """What the handler uses of ``llama_cpp.Llama``: the GGUF's template and its ready-made template handler."""

    def __init__(self, template: str, reply: list[str]) -> None:
        self.metadata = {"tokenizer.chat_template": template}
        self.requests: list[dict[str, Any]] = []
        self._chat_handlers = {"chat_template.default": self._handler}
        self.reply = reply

    def _handler(self, **kw: Any) -> Any:
        self.requests.append(kw)
        out = chunks(*self.reply)
        return out if kw.get("stream") else {"forced": kw.get("tool_choice")}


TOOLS = [{"type": "function", "function": {"name": "cancel", "parameters": {"type": "object"}}}]
HISTORY = [
    {"role": "system", "content": "You are Diana."},
    {"role": "user", "content": "Cancel B-102."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "cancel", "arguments": '{"booking_id": "B-102"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Cancelled B-102."},
]


def test_a_template_with_tools_gets_them_and_earlier_arguments_as_objects() -> None:
    llama = FakeLlama("{% if tools %}...{% endif %}", [CANCEL])
    done = hermes_tools_handler(llama=llama, messages=HISTORY, tools=TOOLS, stream=False, temperature=0.0)
    assert done["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(done["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "booking_id": "B-102"
    }
    (req,) = llama.requests
    assert req["tools"] == TOOLS and req["stream"] is True and req["temperature"] == 0.0
    assert req["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"booking_id": "B-102"}
    assert req["messages"][3]["role"] == "tool"


def test_a_template_without_tools_gets_the_instructions_and_hermes_history() -> None:
    llama = FakeLlama("{{ message['content'] }}", ["Done."])
    text, calls, _ = collect(hermes_tools_handler(llama=llama, messages=HISTORY, tools=TOOLS, stream=True))
    assert (text, calls) == ("Done.", [])
    msgs = llama.requests[0]["messages"]
    assert llama.requests[0]["tools"] is None
    assert msgs[0]["content"].startswith("You are Diana.\n\n# Tools") and '"name": "cancel"' in msgs[0]["content"]
    assert msgs[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "cancel", "arguments": {"booking_id": "B-102"}}\n</tool_call>',
    }
    assert msgs[3] == {"role": "user", "content": "<tool_response>\nCancelled B-102.\n</tool_response>"}


def test_no_tools_or_tool_choice_none_is_plain_text_and_a_forced_tool_keeps_the_grammar_path() -> None:
    llama = FakeLlama("{% if tools %}{% endif %}", ["Hello ", "{there}"])
    assert collect(hermes_tools_handler(llama=llama, messages=HISTORY[:2], stream=True))[0] == "Hello {there}"
    hermes_tools_handler(llama=llama, messages=HISTORY[:2], tools=TOOLS, tool_choice="none", stream=True)
    assert "tools" not in llama.requests[-1]
    forced = {"type": "function", "function": {"name": "cancel"}}
    got = hermes_tools_handler(llama=llama, messages=HISTORY[:2], tools=TOOLS, tool_choice=forced, stream=False)
    assert got == {"forced": forced}


def test_register_makes_the_format_known_to_llama_cpp_and_the_server_is_started_with_it(tmp_path: Path) -> None:
    from llama_cpp import llama_chat_format

    from workbench.models.llm_server import LocalLLMServer

    register()
    register()  # idempotent: the server process may import it twice
    assert llama_chat_format.get_chat_completion_handler(NAME) is hermes_tools_handler
    cmd = LocalLLMServer(EndpointConfig(gguf="smollm2", chat_format=NAME), tmp_path).command()
    assert cmd[cmd.index("--chat_format") + 1] == NAME
    assert "--chat_format" not in LocalLLMServer(EndpointConfig(gguf="smollm2"), tmp_path).command()


def test_the_booking_suite_runs_on_the_tool_calling_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.workflows.suite import load_suite

    for var in ("WORKBENCH__LLM__GGUF", "WORKBENCH__LLM__CHAT_FORMAT"):
        monkeypatch.delenv(var, raising=False)
    llm = load_suite(Path(__file__).resolve().parents[2] / "evals" / "booking.yaml").workbench_config().llm
    assert (llm.kind, llm.gguf, llm.chat_format) == ("local", "qwen2.5-coder-0.5b", NAME)
