"""Child processes of the tests (tests/test_speed.py, tests/test_routing.py), and what
they report; spawned ones import this module, and nothing else of the suite."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable
from typing import Any

REPORT = "import os; print(len(os.sched_getaffinity(0)))"


def report(queue: Any) -> None:
    queue.put(len(os.sched_getaffinity(0)))


def serve_in_a_child(queue: Any) -> None:
    """A server process forked from the DB thread: its thread-sensitive calls, and sync
    code in them that calls async_to_sync (a sync view behind channels' live server)."""
    import asyncio
    import threading

    from asgiref.sync import async_to_sync, sync_to_async

    from djasynctest._dbthread import db_thread

    def sync_view() -> str:
        result: str = async_to_sync(asyncio.sleep)(0, result="sent")
        return result

    async def serve() -> tuple[str, str]:
        where = await sync_to_async(lambda: threading.current_thread().name)()
        return where, await sync_to_async(sync_view)()

    queue.put((threading.current_thread().name, db_thread().is_current(), asyncio.run(serve())))


def from_a_child(method: str, target: Callable[[Any], None]) -> Any:
    """What ``target``, run in a child that multiprocessing starts with ``method``, puts on
    the queue it is given (a child that never does fails the caller, and is killed)."""
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    with warnings.catch_warnings():
        # Python 3.12+: fork() in a process with threads (ours) is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=target, args=(queue,))
        child.start()
    try:
        return queue.get(timeout=60)
    finally:
        child.join(10)
        if child.exitcode is None:
            child.kill()
