"""Tool calling through llama.cpp for the embedded chat models: the ``hermes-tools`` chat format.

Why it exists: no chat format of llama-cpp-python 0.3.36 returns an embedded model's tool call as the
structured, *streamed* ``tool_calls`` delta that livekit-plugins-openai reads (measured here, see
docs/strategies.md, "Tools"):

- the GGUF's own template (``chat_format`` unset) renders the tools for Qwen2.5, whose answer is a correct
  Hermes-style ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; but the server returns it as the
  message's text (the tags are special tokens and drop out), so the agent would speak JSON;
- ``chatml-function-calling`` leaves the tools out of the prompt unless the request sets ``tool_choice`` (the
  plugin does not); with ``tool_choice: auto`` Qwen2.5 chose its ``message:`` branch, whose follow-up grammar
  then only allows a tool name as the reply, and a streamed tool call raises "Automatic streaming tool choice
  is not supported";
- ``functionary`` does not stream, and ``functionary-v1``/``-v2`` need the functionary tokenizer from the hub.

``hermes-tools`` renders the GGUF's own chat template with the tools (a template that has no tools, such as
SmolLM2's, gets Qwen2.5's tool instructions appended to its system message), streams the completion, and turns a
Hermes tool call in the reply (with or without its ``<tool_call>`` tags, in single or doubled braces) into OpenAI
``tool_calls``: the parser vLLM calls ``hermes``. Text before a call, and every reply that is not one, streams as
it comes; only text that may start a call (from a ``{`` or ``<``) is held until it is clearly one or not. A call
whose JSON does not parse is returned as text, so a failure is visible in the transcript rather than silent. A
request that forces one tool (``tool_choice: {"function": ...}``) uses llama-cpp-python's grammar-constrained path
unchanged.

The server process registers it (:func:`register`, from ``workbench.models._llama_serve``); select it with
``llm: {kind: local, chat_format: hermes-tools}``.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

NAME = "hermes-tools"

TOOL_CALL_TAG = "<tool_call>"
_TAGS = re.compile(r"</?tool_call>")
_CALL_START = re.compile(r'\{\{?\s*"name"')  # doubled: see parse_tool_calls
_MAYBE_CALL_START = re.compile(r'\{\{?\s*(?:"(?:n(?:a(?:m(?:e)?)?)?)?)?')  # a prefix of `{"name"`
# Qwen2.5's own tool instructions (its chat template), for templates that do not render tools themselves
_TOOLS_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
    "</tool_call>"
)

Call = tuple[str, dict[str, Any]]


def parse_tool_calls(text: str) -> list[Call] | None:
    """The ``(name, arguments)`` of every Hermes tool call in ``text``, or None when it is not only tool calls.

    A call may come in doubled braces (``{{"name": ...}}``, with a closing brace or two too many): the chat
    template of the Qwen2.5-Coder-1.5B GGUF shows its example that way, and the model copies it.
    """
    body = _TAGS.sub(" ", text).strip()
    decoder = json.JSONDecoder()
    calls: list[Call] = []
    i = 0
    while i < len(body):
        if body[i].isspace():
            i += 1
            continue
        doubled = body.startswith("{{", i)
        try:
            obj, i = decoder.raw_decode(body, i + 1 if doubled else i)
        except ValueError:
            return None
        if doubled:  # the closing braces the doubled opening brace asks for, or one more
            while i < len(body) and (body[i] == "}" or body[i].isspace()):
                i += 1
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):  # some models give the arguments as a JSON string
            try:
                args = json.loads(args or "{}")
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append((obj["name"], args))
    return calls or None


def _starts_call(held: str, final: bool) -> bool | None:
    """Whether ``held`` (text from a ``{`` or ``<`` on) starts a tool call; None: too short to tell yet."""
    if held.startswith("<"):
        if held.startswith(TOOL_CALL_TAG):
            return True
        return None if TOOL_CALL_TAG.startswith(held) and not final else False
    if _CALL_START.match(held):
        return True
    return None if _MAYBE_CALL_START.fullmatch(held) and not final else False


class HermesSplitter:
    """Splits a streamed reply into the text to say now and the tool calls it ends with.

    ``feed`` returns what can be streamed at once; from the first sign of a call on, the rest of the reply is
    collected and parsed by ``finish``.
    """

    def __init__(self) -> None:
        self._held = ""
        self._call_text: str | None = None

    def feed(self, piece: str) -> str:
        if self._call_text is not None:
            self._call_text += piece
            return ""
        self._held += piece
        out: list[str] = []
        while self._held:
            j = min((k for k in (self._held.find("{"), self._held.find("<")) if k >= 0), default=-1)
            if j < 0:
                out.append(self._held)
                self._held = ""
                break
            out.append(self._held[:j])
            self._held = self._held[j:]
            verdict = _starts_call(self._held, final=False)
            if verdict is None:
                break
            if verdict:
                self._call_text, self._held = self._held, ""
                break
            out.append(self._held[0])
            self._held = self._held[1:]
        return "".join(out)

    def finish(self) -> tuple[str, list[Call]]:
        """The text still to say and the tool calls; a call that does not parse comes back as text."""
        if self._call_text is not None:
            calls = parse_tool_calls(self._call_text)
            return ("", calls) if calls else (self._call_text, [])
        rest, self._held = self._held, ""
        return rest, []


def _tool_call(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": i,
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
    }


def _messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, native: bool) -> list[dict[str, Any]]:
    """The request's messages as the template needs them.

    A template with tools (``native``) gets each earlier call's arguments as an object (Qwen2.5's template writes
    them with ``tojson``: a JSON string would be quoted twice). Any other template gets the tool instructions in the
    system message, earlier calls as Hermes text and tool results as ``<tool_response>`` user turns, since it only
    knows plain string contents.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        m = dict(m)
        calls = m.get("tool_calls") or []
        if native:
            if calls:
                m["tool_calls"] = [_with_object_args(c) for c in calls]
        elif m.get("role") == "tool":
            m = {"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"}
        elif calls:
            fns = [_with_object_args(c)["function"] for c in calls]
            text = "\n".join(
                f"{TOOL_CALL_TAG}\n{json.dumps({'name': f['name'], 'arguments': f['arguments']})}\n</tool_call>"
                for f in fns
            )
            m = {"role": "assistant", "content": "\n".join(t for t in (m.get("content"), text) if t)}
        if m.get("content") is None:
            m["content"] = ""
        out.append(m)
    if tools and not native:
        listing = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        if out and out[0].get("role") == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}{_TOOLS_PROMPT.format(tools=listing)}"}
        else:
            out.insert(0, {"role": "system", "content": _TOOLS_PROMPT.format(tools=listing).lstrip()})
    return out


def _with_object_args(call: dict[str, Any]) -> dict[str, Any]:
    fn = dict(call.get("function") or {})
    if isinstance(fn.get("arguments"), str):
        with contextlib.suppress(ValueError):  # not JSON: the template gets the text as it came
            fn["arguments"] = json.loads(fn["arguments"] or "{}")
    return {**call, "function": fn}


def _chunk(base: dict[str, Any], delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": base["id"],
        "object": "chat.completion.chunk",
        "created": base["created"],
        "model": base["model"],
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def split_stream(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Chat-completion chunks of plain text in, the same with the reply's tool calls as ``tool_calls`` out."""
    splitter = HermesSplitter()
    base: dict[str, Any] | None = None
    for chunk in chunks:
        base = base or chunk
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            now = splitter.feed(text)
            if now:
                yield _chunk(chunk, {"content": now})
        elif choice.get("finish_reason") is None:
            yield chunk  # the role, or an empty delta
        if choice.get("finish_reason") is not None:
            yield from _finish(splitter, chunk, choice["finish_reason"])
            return
    if base is not None:  # ended without a finish reason
        yield from _finish(splitter, base, "stop")


def _finish(splitter: HermesSplitter, base: dict[str, Any], reason: str) -> Iterator[dict[str, Any]]:
    rest, calls = splitter.finish()
    if rest:
        yield _chunk(base, {"content": rest})
    for i, (name, args) in enumerate(calls):
        yield _chunk(base, {"tool_calls": [_tool_call(i, name, args)]})
    yield _chunk(base, {}, "tool_calls" if calls else reason)


def _completion(chunks: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """A non-streamed chat completion assembled from :func:`split_stream`'s chunks."""
    content: list[str] = []
    calls: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    reason = "stop"
    for chunk in chunks:
        first = first or chunk
        choice = chunk["choices"][0]
        delta = choice.get("delta") or {}
        content.append(delta.get("content") or "")
        calls.extend(delta.get("tool_calls") or [])
        reason = choice.get("finish_reason") or reason
    assert first is not None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": first["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def hermes_tools_handler(
    *,
    llama: Any,
    messages: list[dict[str, Any]],
    functions: list[dict[str, Any]] | None = None,
    function_call: Any = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    stream: bool = False,
    **kwargs: Any,
) -> Any:
    """llama-cpp-python chat completion handler for ``hermes-tools`` (see the module doc)."""
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError(f"{NAME} needs a chat template in the GGUF's metadata")
    handler = llama._chat_handlers["chat_template.default"]  # the GGUF's own template, built by Llama()
    if functions is not None and tools is None:  # the legacy API, as the other handlers accept it
        tools = [{"type": "function", "function": f} for f in functions]
        if isinstance(function_call, dict) and "name" in function_call:
            tool_choice = {"type": "function", "function": {"name": function_call["name"]}}
        elif function_call in ("none", "auto"):
            tool_choice = function_call
    if tool_choice == "none":
        tools = None
    native = "tools" in template
    msgs = _messages(messages, tools, native)
    if isinstance(tool_choice, dict):  # one tool forced: llama-cpp-python's grammar path returns it as a call
        return handler(llama=llama, messages=msgs, tools=tools, tool_choice=tool_choice, stream=stream, **kwargs)
    if not tools:
        return handler(llama=llama, messages=msgs, stream=stream, **kwargs)
    # tool_choice auto, required or unset (the OpenAI API's default with tools is auto): the model decides
    chunks = handler(llama=llama, messages=msgs, tools=tools if native else None, stream=True, **kwargs)
    out = split_stream(iter(chunks))
    return out if stream else _completion(out)


def register() -> None:
    """Make ``chat_format: hermes-tools`` available to llama-cpp-python (in the server's process; idempotent)."""
    from llama_cpp import llama_chat_format

    llama_chat_format.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        NAME, hermes_tools_handler, overwrite=True
    )
