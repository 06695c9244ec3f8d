"""Diagnostics: what blocked the event loop, what a timed-out test was waiting for, what leaked.

Blocking detector
    While the loop runs a test's coroutine, a callback on the loop (the
    heartbeat) notes the time every ``threshold / 5`` seconds. A watchdog
    thread looks at the heartbeats; when one is older than the threshold, the
    loop's thread is stuck in one callback, and the watchdog samples that
    thread's stack (``sys._current_frames``) at that moment: the report names
    the line that was running, not only the callback. When the loop comes back,
    the heartbeat measures how long it was held.

Timeout
    A timer on the loop; when it fires, it formats the stack of every pending
    task, then cancels the test's task.

Leaks
    Tasks a test left pending, and threads it started and left running, are
    reported as warnings when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
import traceback
import unittest
import weakref
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

import django

from djasynctest._dbthread import running_db_thread
from djasynctest._routing import process_wide_threads

__unittest = True

T = TypeVar("T")

# Frames of these packages are left out of the stacks shown to users: the
# user's code is what they can change.
_RUNNERS = asyncio.runners.__file__
_HIDDEN = tuple(
    os.path.dirname(path) + os.sep
    for path in (asyncio.__file__, __file__, unittest.__file__, django.__file__)
)


class BlockingWarning(UserWarning):
    """The event loop was held longer than ``blocking_threshold`` (``blocking_mode = "warn"``)."""


class LoopBlocked(AssertionError):
    """The event loop was held longer than ``blocking_threshold`` (``blocking_mode = "fail"``)."""


class TestTimeout(AssertionError):
    """A test ran longer than its ``timeout``."""

    __test__ = False  # not a test, whatever pytest thinks of the name


class PendingTaskWarning(ResourceWarning):
    """A test ended with tasks still pending, or threads it started still running."""


def user_stack(frame: FrameType | None, *, limit: int = 12) -> str:
    """The user's part of the stack of ``frame``, and the innermost frame wherever it is."""
    return _format(traceback.extract_stack(frame), limit=limit)


def _format(summary: traceback.StackSummary, *, limit: int = 12) -> str:
    # What runs on the loop starts after asyncio.Runner.run; before it are
    # unittest, the test runner and the program's start.
    starts = [i for i, entry in enumerate(summary) if entry.filename == _RUNNERS]
    summary = traceback.StackSummary.from_list(summary[starts[-1] + 1 :] if starts else summary)
    kept = [entry for entry in summary if not entry.filename.startswith(_HIDDEN)]
    if summary and (not kept or kept[-1] is not summary[-1]):
        kept.append(summary[-1])  # the call that was running, even inside a library
    return "".join(traceback.format_list(kept[-limit:]))


for _public in (BlockingWarning, LoopBlocked, TestTimeout, PendingTaskWarning):
    _public.__module__ = "djasynctest"  # as users import and see them


# --- Blocking detector ------------------------------------------------------------


class _Watch:
    """One loop's heartbeat, shared between the loop's thread and the watchdog."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self.loop = loop
        self.threshold = threshold
        # How often the heartbeat runs: a blocked loop is measured to within it.
        self.interval = threshold / 5
        self.thread_id = threading.get_ident()
        self.beat = time.monotonic()
        self.sample: str | None = None  # the stack while blocked, set by the watchdog
        self.blocks: list[tuple[float, str]] = []
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.beat = time.monotonic()
        self._handle = self.loop.call_later(self.interval, self._on_beat)

    def _on_beat(self) -> None:
        # The loop's thread: the loop is free again.
        self._record(time.monotonic())
        self._handle = self.loop.call_later(self.interval, self._on_beat)

    def _record(self, now: float) -> None:
        held = now - self.beat - self.interval
        if self.sample is not None and held > self.threshold:
            self.blocks.append((held, self.sample))
        self.sample = None
        self.beat = now

    def stop(self) -> list[tuple[float, str]]:
        if self._handle is not None:
            self._handle.cancel()
        held = time.monotonic() - self.beat
        if self.sample is not None and held > self.threshold:
            # Blocked until the test's coroutine ended.
            self.blocks.append((held, self.sample))
        self.sample = None
        return self.blocks


class _Watchdog:
    """One thread per process, awake only while some loop is watched."""

    def __init__(self) -> None:
        self._watches: set[_Watch] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="djasynctest-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def watching(self, watch: _Watch) -> Iterator[None]:
        with self._lock:
            self._watches.add(watch)
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            with self._lock:
                watches = list(self._watches)
            if not watches:
                self._wake.wait()
                self._wake.clear()
                continue
            time.sleep(min(watch.threshold for watch in watches) / 4)
            now = time.monotonic()
            for watch in watches:
                if watch.sample is None and now - watch.beat > watch.threshold:
                    frame = sys._current_frames().get(watch.thread_id)
                    watch.sample = user_stack(frame)


_watchdog: _Watchdog | None = None


def _get_watchdog() -> _Watchdog:
    global _watchdog
    if _watchdog is None or _watchdog._pid != os.getpid():
        _watchdog = _Watchdog()
    return _watchdog


def blocking_report(test: str, blocks: list[tuple[float, str]], threshold: float) -> str:
    held, stack = max(blocks)
    times = f" ({len(blocks)} times; the longest is shown)" if len(blocks) > 1 else ""
    return (
        f"The event loop was blocked for about {held:.2f} s (blocking_threshold is "
        f"{threshold:g} s) in {test}{times}. While it was blocked, its thread was running:\n"
        f"{stack}"
        "A blocking call stalls every task of the test. Await an async API instead "
        "(asyncio.sleep, an async HTTP client), or run the blocking code in a thread: "
        "await asyncio.to_thread(func) or await sync_to_async(func)(). To allow it, raise "
        "blocking_threshold or set it to None."
    )


# --- Timeout ----------------------------------------------------------------------


def task_stack(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: its coroutine and every coroutine it awaits."""
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return _format(traceback.StackSummary.extract(frames)) or "  (not started)\n"


def tasks_report(loop: asyncio.AbstractEventLoop, test_task: asyncio.Task[Any]) -> str:
    parts = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda task: task is not test_task):
        if not task.done():
            name = "the test" if task is test_task else f"task {task.get_name()}"
            parts.append(f"{name}:\n{task_stack(task)}")
    return "".join(parts)


async def with_timeout(
    coro: Coroutine[Any, Any, T], seconds: float, *, timeout: float, test: str
) -> T:
    """Run ``coro``; after ``seconds`` (what is left of ``timeout``), fail with all stacks."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    report: list[str] = []

    def expire() -> None:
        report.append(tasks_report(loop, task))
        task.cancel()

    handle = loop.call_later(seconds, expire)
    try:
        return await coro
    except asyncio.CancelledError:
        if not report:
            raise
        task.uncancel()
        msg = (
            f"{test} did not finish within its timeout of {timeout:g} s. Pending tasks when "
            f"it expired:\n{report[0]}Raise the test's timeout, or find what it waits for above."
        )
        raise TestTimeout(msg) from None
    finally:
        handle.cancel()


# --- Leaks ------------------------------------------------------------------------

_creation_stacks: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()


def record_task_creation(loop: asyncio.AbstractEventLoop) -> None:
    """Remember where each task of ``loop`` is created (``task_creation_stacks = True``)."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        _creation_stacks[task] = user_stack(sys._getframe(1))
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]


def new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads started since ``before`` that are still running after a short grace."""
    started = {
        thread
        for thread in threading.enumerate()
        # The loop's default executor (shut down with the loop) and ours.
        if thread not in before and not thread.name.startswith(_OWN_THREADS)
    } - process_wide_threads()
    if started:
        _join(started)
    if any(thread.is_alive() for thread in started):
        # An executor that nothing references any more (asgiref's async_to_sync
        # makes one per call) stops its thread once it is collected.
        gc.collect()
        _join(started)
    return {thread for thread in started if thread.is_alive()}


_OWN_THREADS = ("asyncio_", "uvloop_", "djasynctest-")


def _join(threads: set[threading.Thread], grace: float = 0.05) -> None:
    deadline = time.monotonic() + grace
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


# Database connections opened off the DB thread while a test runs: they are
# outside the test's transaction, and nothing closes them.
_foreign_connections: list[tuple[str, Any]] | None = None


def on_connection_created(*, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: remember connections opened off the DB thread."""
    watched = _foreign_connections
    db = running_db_thread()
    if watched is not None and db is not None and not db.is_current():
        watched.append((threading.current_thread().name, connection))


def watch_connections() -> None:
    global _foreign_connections
    _foreign_connections = []


def connections_left_open() -> list[tuple[str, Any]]:
    """The connections opened off the DB thread since ``watch_connections``, still open."""
    global _foreign_connections
    watched, _foreign_connections = _foreign_connections or [], None
    return [(thread, conn) for thread, conn in watched if conn.connection is not None]


def leaks_report(
    test: str,
    tasks: set[asyncio.Task[Any]],
    threads: set[threading.Thread],
    connections: list[tuple[str, Any]] = (),  # type: ignore[assignment]
) -> str | None:
    parts = []
    for task in tasks:
        where = _creation_stacks.get(task)
        made = (
            f"  created at:\n{where}"
            if where
            else "  (set task_creation_stacks = True to see where it was created)\n"
        )
        parts.append(f"task {task.get_name()} ({task.get_coro()!r}) is still pending\n{made}")
    parts += [f"thread {thread.name!r} is still running\n" for thread in threads]
    parts += [
        f"database connection {conn.alias!r}, opened by thread {thread!r} outside the "
        "test's transaction, is still open\n"
        for thread, conn in connections
    ]
    if not parts:
        return None
    return (
        f"{test} left behind:\n" + "".join(parts) + "Await or cancel the tasks a test starts, "
        "join its threads and close their connections before it ends: they would run on "
        "into the next test."
    )


def watch_blocking(loop: asyncio.AbstractEventLoop, threshold: float) -> tuple[_Watch, Any]:
    watch = _Watch(loop, threshold)
    return watch, _get_watchdog().watching(watch)
