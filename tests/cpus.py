"""What child processes report (tests/test_speed.py, tests/test_routing.py)."""

from __future__ import annotations

import os
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
