"""From an agent framework's run to a stream of tokens the strategy can yield as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

_END = object()


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


async def stream_from_task(
    produce: Callable[[Callable[[str], None]], Awaitable[None]],
    *,
    name: str,
    on_cancel: Callable[[], None] | None = None,
) -> AsyncIterator[str]:
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
