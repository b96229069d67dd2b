"""Sync entry points over async code that work in scripts and inside a running event loop (Jupyter) alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]], *, name: str = "workbench-sync") -> T:
    """Run a coroutine to completion from sync code, also when the caller is inside an event loop.

    With no running loop this is ``asyncio.run``. Inside one (a notebook cell), ``asyncio.run`` would
    refuse, so the coroutine runs on its own loop in a thread while the caller waits; an interrupt
    (Ctrl-C, the notebook's stop button) cancels it there and is re-raised once it has cleaned up.
    Takes a factory so the coroutine is created on the loop that runs it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())

    box: dict[str, Any] = {}
    cancelled = threading.Event()

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        box["cancel"] = lambda: task.get_loop().call_soon_threadsafe(task.cancel)
        if cancelled.is_set():  # interrupted before the loop started
            raise asyncio.CancelledError
        return await factory()

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name=name)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        cancelled.set()
        if "cancel" in box:
            box["cancel"]()
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = ["run_sync"]
