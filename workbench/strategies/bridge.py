"""Between LiveKit and an agent framework: a turn's chat context in, the run's tokens out as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from livekit.agents.llm import ChatContext, ChatMessage


@dataclass(frozen=True)
class Transcript:
    """A turn's chat context as the agent frameworks take it: the instructions, then user and assistant lines."""

    instructions: str
    messages: list[tuple[Literal["user", "assistant"], str]]


def to_transcript(chat_ctx: ChatContext) -> Transcript:
    """Tool results become short assistant notes (the agents have no tools).

    System or developer messages after the first user turn are folded into the instructions, because many
    local chat templates reject a system message that is not the first.
    """
    system: list[str] = []
    messages: list[tuple[Literal["user", "assistant"], str]] = []
    for item in chat_ctx.items:
        if isinstance(item, ChatMessage):
            text = item.text_content or ""
            if item.role in ("system", "developer"):
                if text:
                    system.append(text)
            elif item.role == "user":
                messages.append(("user", text))
            elif item.role == "assistant" and text:
                messages.append(("assistant", text))
        elif item.type == "function_call_output":
            messages.append(("assistant", f"({item.name} returned: {getattr(item, 'output', '')})"))
    return Transcript("\n\n".join(system), messages)


_END = object()


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


async def stream_from_task(
    produce: Callable[[Callable[[str], None]], Awaitable[None]],
    *,
    name: str,
    on_cancel: Callable[[], None] | None = None,
) -> AsyncGenerator[str, None]:
    """Run ``produce(emit)`` in its own task and yield each non-empty text it emits.

    The run has its own task so that closing this generator can cancel it mid-await, which interrupts the
    HTTP read wherever it is and closes the response (a barge-in stops the server generating). ``on_cancel``
    runs first, for a framework's own cancellation (AutoGen's ``CancellationToken``). A failure of the run
    is raised here, with its own type.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        try:
            await produce(queue.put_nowait)
            queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # handed to the consumer
            queue.put_nowait(_Failed(e))

    runner = asyncio.create_task(run(), name=name)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            if item:
                yield item
    finally:
        if not runner.done():
            if on_cancel is not None:
                on_cancel()
            runner.cancel()
            await asyncio.wait([runner])  # never swallows our own cancellation
