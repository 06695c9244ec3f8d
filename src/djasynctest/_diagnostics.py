"""Diagnostics: what blocked the event loop, what a timed-out test was waiting for, what leaked.

Blocking detector
    While the loop runs a test's code, a watchdog thread pings it every
    ``threshold / 4`` seconds. When a ping waits longer than the threshold, the
    loop's thread is stuck in one callback, and the watchdog samples that
    thread's stack (``sys._current_frames``) at that moment: the report names
    the line that was running, not only the callback. A test shorter than a
    ping interval costs two set operations.

Timeout
    One timer on the test's loop; when it fires, it formats the stack of every
    pending task (and of the DB thread, whose queries it interrupts), then
    cancels the test's task. Sync code on the DB thread is waited for until
    the same moment.

Leaks
    Tasks a test left pending, and threads it started and left running, are
    reported as warnings when the test ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import os
import sys
import threading
import time
import traceback
import unittest
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future
from types import FrameType
from typing import Any, TypeVar

import asgiref
import django

from djasynctest._dbthread import running_db_thread
from djasynctest._routing import process_wide_threads

__unittest = True

T = TypeVar("T")

# Frames of these packages are left out of the stacks shown to users: the
# user's code is what they can change.
_RUNNERS = asyncio.runners.__file__
_HIDDEN = (
    *(
        os.path.dirname(path) + os.sep
        for path in (
            asyncio.__file__,
            __file__,
            unittest.__file__,
            django.__file__,
            asgiref.__file__,
            concurrent.futures.__file__,
        )
    ),
    threading.__file__,  # the DB thread's own start
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


class LoopWatch:
    """Blocking detection for one test's loop: shared by its thread and the watchdog.

    While the loop runs the test's code (``running``), the watchdog pings it
    every ``threshold / 4`` seconds with ``call_soon_threadsafe``. A ping that
    has waited longer than ``threshold`` means one callback holds the loop: the
    watchdog samples the loop thread's stack then. When the pong comes, the
    time it waited is how long the loop was held (at least).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        self.loop = loop
        self.threshold = threshold
        self.thread_id = threading.get_ident()
        self.ping: float | None = None  # when the unanswered ping was sent
        self.sample: str | None = None  # the stack while blocked, set by the watchdog
        self.blocks: list[tuple[float, str]] = []

    def start(self) -> None:
        # The loop's thread, before it runs the loop.
        self.ping = None
        self.sample = None
        _get_watchdog().watches.add(self)

    def stop(self) -> list[tuple[float, str]]:
        # The loop's thread, when the loop has stopped: a ping still waiting
        # means the loop was held until the test's code ended.
        _get_watchdog().watches.discard(self)
        if self.ping is not None and self.sample is not None:
            self.blocks.append((time.monotonic() - self.ping, self.sample))
        self.ping = None
        blocks, self.blocks = self.blocks, []
        return blocks

    def pong(self, sent: float) -> None:
        # The loop's thread: the loop is free again.
        if sent != self.ping:
            return  # a ping from an earlier run of the loop
        if self.sample is not None:
            self.blocks.append((time.monotonic() - sent, self.sample))
            self.sample = None
        self.ping = None


class _Watchdog:
    """One thread per process; it sleeps while no loop is watched."""

    def __init__(self) -> None:
        self.watches: set[LoopWatch] = set()
        self.wake = threading.Event()
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="djasynctest-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            watches = list(self.watches)
            now = time.monotonic()
            if not watches:
                if now - idle_since > 1:
                    self.wake.wait()  # get_watchdog() wakes it
                    self.wake.clear()
                    idle_since = time.monotonic()
                else:
                    time.sleep(0.02)
                continue
            idle_since = now
            for watch in watches:
                if watch.ping is None:
                    watch.ping = now
                    with contextlib.suppress(RuntimeError):  # the loop just closed
                        watch.loop.call_soon_threadsafe(watch.pong, now)
                elif watch.sample is None and now - watch.ping > watch.threshold:
                    frame = sys._current_frames().get(watch.thread_id)
                    watch.sample = user_stack(frame)
            time.sleep(min(watch.threshold for watch in watches) / 4)


_watchdog: _Watchdog | None = None


def _get_watchdog() -> _Watchdog:
    global _watchdog
    if _watchdog is None or _watchdog.pid != os.getpid():
        _watchdog = _Watchdog()
    if not _watchdog.wake.is_set():
        _watchdog.wake.set()
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


def tasks_report(
    loop: asyncio.AbstractEventLoop, test_task: asyncio.Task[Any], label: str = "the test"
) -> str:
    parts = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda task: task is not test_task):
        if not task.done():
            name = label if task is test_task else f"task {task.get_name()}"
            parts.append(f"{name}:\n{task_stack(task)}")
    return "".join(parts)


class Deadline:
    """A test's timeout: one timer on its loop for its async code, and a limit on the
    wait for its sync code on the DB thread.

    When it expires while the DB thread runs the test's work, the report shows
    the DB thread's stack, and the queries its connections run are interrupted
    (SQLite's ``interrupt()``, psycopg's ``cancel()``), so that the test's
    rollback can run.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timeout: float, test: str, label: str = "the test"
    ) -> None:
        self.timeout = timeout
        self.test = test
        self.label = label
        self.report: str | None = None
        self._expires = time.monotonic() + timeout
        self._running: Coroutine[Any, Any, Any] | None = None
        self._handle = loop.call_later(timeout, self._expire, loop)

    def running(self, coro: Coroutine[Any, Any, Any] | None) -> None:
        """The coroutine the loop runs now (the test's task), or None."""
        self._running = coro

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop's thread, while it runs the test's code: report every
        # pending task, then cancel the test's.
        test_task = next(
            (task for task in asyncio.all_tasks(loop) if task.get_coro() is self._running), None
        )
        if test_task is None:
            return
        self.report = tasks_report(loop, test_task, self.label) + _stop_db_thread_work()
        test_task.cancel()

    def result(self, future: Future[T]) -> T:
        """M: the outcome of the test's sync code on the DB thread, waited for until expiry."""
        __tracebackhide__ = True
        if self.report is None:
            try:
                future.exception(timeout=max(0.0, self._expires - time.monotonic()))
            except TimeoutError:
                self._handle.cancel()
                self.report = _stop_db_thread_work()
                try:
                    future.exception(timeout=_INTERRUPT_GRACE)
                except TimeoutError:
                    self.report += (
                        "It did not stop when its queries were interrupted: the test cannot "
                        "be rolled back until it does.\n"
                    )
                raise self.error() from None
        exc = future.exception()
        if exc is not None:
            raise exc
        return future.result()

    def error(self) -> TestTimeout:
        msg = (
            f"{self.test} did not finish within its timeout of {self.timeout:g} s. When it "
            f"expired, it was waiting in:\n{self.report}Raise the test's timeout, or find "
            "what it waits for above."
        )
        return TestTimeout(msg)

    def cancel(self) -> None:
        self._handle.cancel()


# How long a timed-out test waits for the DB thread once its queries are interrupted.
_INTERRUPT_GRACE = 5.0


def _stop_db_thread_work() -> str:
    """If the DB thread is busy: its stack, and interrupt the queries of its connections."""
    db = running_db_thread()
    if db is None or not db.busy:
        return ""
    stack = user_stack(sys._current_frames().get(db.thread.ident or 0))
    interrupt_db_thread_queries()
    return f"the DB thread (any query it was running was interrupted):\n{stack}"


def interrupt_db_thread_queries() -> None:
    """From another thread: interrupt the queries the DB thread's connections run now."""
    for connection in list(_db_thread_connections):
        raw = connection.connection
        # psycopg (cancel_safe, cancel) and sqlite3 (interrupt): safe from another thread.
        for name in ("cancel_safe", "cancel", "interrupt"):
            stop = getattr(raw, name, None)
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()
                break


def stop_db_thread_on_interrupt() -> None:
    """M, on KeyboardInterrupt: end the DB thread, rolling back and closing its connections.

    Ctrl-C skips the class's tearDownClass, and the runner then drops (or
    keeps) the test databases: neither can happen while the DB thread holds
    them in a transaction.
    """
    db = running_db_thread()
    if db is None or db.is_current() or db.stopped:
        return
    db.interrupted = True
    interrupt_db_thread_queries()
    db.stop(timeout=_INTERRUPT_GRACE)


# --- Leaks ------------------------------------------------------------------------

_creation_stacks: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()


def record_task_creation(loop: asyncio.AbstractEventLoop) -> None:
    """Remember where each task of ``loop`` is created (``task_creation_stacks = True``)."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        _creation_stacks[task] = user_stack(sys._getframe(1))
        return task

    loop.set_task_factory(factory)


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


# The DB thread's connections, whose queries a timed-out test interrupts.
_db_thread_connections: weakref.WeakSet[Any] = weakref.WeakSet()


def on_connection_created(*, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: remember the DB thread's connections, and those
    opened off it while a test runs."""
    watched = _foreign_connections
    db = running_db_thread()
    if db is None:
        return
    if db.is_current():
        _db_thread_connections.add(connection)
    elif watched is not None:
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
