"""Diagnostics: what blocked the event loop, what a timed-out test was waiting for, what leaked.

Blocking detector
    While the loop runs a test's code, the watchdog thread (``_watchdog``)
    pings it. When a ping waits longer than the threshold, the loop's thread
    is stuck in one callback, and the watchdog samples that thread's stack
    (``sys._current_frames``) at that moment: the report names the line that
    was running, not only the callback.

Timeout
    One timer of the watchdog, on the real clock; when it fires, the test's
    loop formats the stack of every pending task (and of the DB thread, whose
    queries it interrupts), then cancels the test's task. Sync code on the DB
    thread is waited for until the same moment.

Leaks
    Tasks a test left pending, and threads it started and left running, are
    reported as warnings when the test ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import inspect
import os
import sys
import sysconfig
import threading
import traceback
import unittest
import warnings
import weakref
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, TypeVar

import asgiref
import django

from djasynctest._dbthread import DBThread, outcome, running_db_thread, wait
from djasynctest._routing import process_wide_threads
from djasynctest._watchdog import now, watchdog

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


class PendingTaskWarning(UserWarning):
    """A test ended with tasks still pending, threads it started still running, or
    connections it opened off the DB thread still open (shown by default)."""


def user_stack(frame: FrameType | None, *, limit: int = 12) -> str:
    """The user's part of the stack of ``frame``, and the innermost frame wherever it is."""
    return _format(traceback.extract_stack(frame), limit=limit)


def stack_text(frames: list[tuple[str, int, str, None]], *, limit: int = 12) -> str:
    """``user_stack`` for a stack copied as (filename, line number, function, None)."""
    return _format(traceback.StackSummary.from_list(frames), limit=limit)


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
            name = label if task is test_task else f"task {task_name(task)}"
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
        self,
        loop: asyncio.AbstractEventLoop | None,
        timeout: float,
        test: str,
        label: str = "the test",
    ) -> None:
        self.timeout = timeout
        self.test = test
        self.label = label
        self.report: str | None = None
        # Where the test's async code runs (None until it has some: see Run.attach).
        self.loop = loop
        self._expires = now() + timeout
        self._running: Coroutine[Any, Any, Any] | None = None
        # The watchdog's timer, on the real clock: the loop's may be frozen.
        self._timer = watchdog().call_at(self._expires, self._fire)

    def running(self, coro: Coroutine[Any, Any, Any] | None) -> None:
        """The coroutine the loop runs now (the test's task), or None."""
        self._running = coro

    def _fire(self) -> None:
        # The watchdog thread. With no loop, the test's sync code is waited for
        # until expiry (result()).
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs there
                loop.call_soon_threadsafe(self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop's thread, while it runs the test's code: report every
        # pending task, then cancel the test's.
        if self.report is not None:
            return  # it expired while the DB thread ran the test's code
        test_task = next(
            (task for task in asyncio.all_tasks(loop) if task.get_coro() is self._running), None
        )
        if test_task is None:
            return
        self.report = tasks_report(loop, test_task, self.label) + _stop_db_thread_work()
        test_task.cancel()
        db = running_db_thread()
        if db is not None and db.busy:
            # The test's code may be stuck on the DB thread, where cancelling its
            # task does not reach: what the test does next would wait behind it.
            job = db.jobs_started
            watchdog().call_at(
                now() + _INTERRUPT_GRACE, functools.partial(self._abandon_if_stuck, db, job)
            )

    def _abandon_if_stuck(self, db: DBThread, job: int) -> None:
        # The watchdog thread, a grace period after expiry.
        if db.busy and db.jobs_started == job:
            abandon_db_thread(self.test)

    def result(self, future: Future[T]) -> T:
        """M: the outcome of the test's sync code on the DB thread, waited for until expiry."""
        __tracebackhide__ = True
        if self.report is None:
            try:
                wait(future, timeout=max(0.0, self._expires - now()))
            except TimeoutError:
                self._timer.cancel()
                self.report = _stop_db_thread_work()
                if not self.settle(future):
                    self.report += (
                        "It did not stop when its queries were interrupted: the DB thread "
                        "was abandoned, and its connections closed, which rolled the test "
                        "back.\n"
                    )
                raise self.error() from None
        elif not self.settle(future):
            # After the test timed out, a hook got stuck too.
            raise self.error()
        return outcome(future)

    def settle(self, future: Future[Any]) -> bool:
        """M, once expired: wait a grace period for ``future``'s job; if it is stuck in
        sync code that never returns, abandon the DB thread. Whether it finished."""
        try:
            wait(future, timeout=_INTERRUPT_GRACE)
        except TimeoutError:
            abandon_db_thread(self.test)
            return False
        return True

    def error(self) -> TestTimeout:
        msg = (
            f"{self.test} did not finish within its timeout of {self.timeout:g} s. When it "
            f"expired, it was waiting in:\n{self.report}Raise the test's timeout, or find "
            "what it waits for above."
        )
        return TestTimeout(msg)

    def cancel(self) -> None:
        self._timer.cancel()


# How long a timed-out test waits for the DB thread once its queries are interrupted.
_INTERRUPT_GRACE = 5.0


def _stop_db_thread_work() -> str:
    """If the DB thread is busy: its stack, and interrupt the queries of its connections."""
    db = running_db_thread()
    if db is None or not db.busy:
        return ""
    stack = user_stack(sys._current_frames().get(db.thread.ident or 0))
    interrupt_db_thread_queries(db)
    return f"the DB thread (any query it was running was interrupted):\n{stack}"


def interrupt_db_thread_queries(db: DBThread) -> None:
    """From another thread: interrupt the queries ``db``'s connections run now."""
    for connection in list(db.connections):
        raw = connection.connection
        # psycopg (cancel_safe, cancel) and sqlite3 (interrupt): safe from another thread.
        for name in ("cancel_safe", "cancel", "interrupt"):
            stop = getattr(raw, name, None)
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()
                break


def abandon_db_thread(test: str) -> None:
    """M: leave the DB thread to the code it is stuck in, and end its transactions.

    It takes no more work (the rest of its class fails with the cause); its
    connections are ended from here: PostgreSQL's by the server
    (``pg_terminate_backend``, from a connection of this thread's), then every
    one at the driver, which rolls back its transactions and releases its
    locks, SQLite in memory included. The next class starts a new DB thread.
    """
    db = running_db_thread()
    if db is None or db.stopped:
        return
    db.abandon(test)
    for connection in list(db.connections):
        raw = connection.connection
        if raw is None:
            continue
        if connection.vendor == "postgresql":
            with contextlib.suppress(Exception):
                other = connection.copy()
                try:
                    with other.cursor() as cursor:
                        cursor.execute("SELECT pg_terminate_backend(%s)", [raw.info.backend_pid])
                finally:
                    other.close()
        with contextlib.suppress(Exception):
            raw.close()


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
    interrupt_db_thread_queries(db)
    db.stop(timeout=_INTERRUPT_GRACE)


def warn_at_test(case: unittest.TestCase, message: str, category: type[Warning]) -> None:
    """Warn at the test method's own line, where users look, not at the library's."""
    method = getattr(case, case._testMethodName, None)
    if not warn_at(method, type(case).__module__, message, category):
        warnings.warn(message, category, stacklevel=3)


def warn_at(function: Any, module: str, message: str, category: type[Warning]) -> bool:
    """Warn at the first line of ``function`` (of ``module``); False if it has no code."""
    __tracebackhide__ = True
    code = getattr(inspect.unwrap(function), "__code__", None) if function is not None else None
    if code is None:
        return False
    loaded = sys.modules.get(module)
    warnings.warn_explicit(
        message,
        category,
        code.co_filename,
        code.co_firstlineno,
        module=module,
        registry=None if loaded is None else vars(loaded).setdefault("__warningregistry__", {}),
    )
    return True


# --- Leaks ------------------------------------------------------------------------

# The tasks made during the current test, by id(task): the task (weakly: a task
# lives no longer for being watched), its maker's code, line and (with
# task_creation_stacks) stack, made a Site only for a report. Emptied when each test
# starts (forget_task_sites). The leak report reads it, not asyncio.all_tasks(),
# which walks every task of the process.
_creation_sites: dict[int, tuple[weakref.ref[asyncio.Task[Any]], CodeType, int, str | None]] = {}
_ASYNCIO = os.path.dirname(asyncio.__file__) + os.sep
_PACKAGE_DIRS = ("site-packages", "dist-packages")
_STDLIB = tuple(
    os.path.join(path, "")
    for path in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
)
_OWN = os.path.join(os.path.dirname(__file__), "")


def package_of(filename: str) -> str | None:
    """The installed package a file belongs to, "the standard library", or None (the project)."""
    parts = filename.split(os.sep)
    for marker in _PACKAGE_DIRS:
        if marker in parts:
            index = len(parts) - 1 - parts[::-1].index(marker)
            name = parts[index + 1] if index + 1 < len(parts) else marker
            return name.removesuffix(".py")
    if filename.startswith(_OWN):
        return "djasynctest"
    if filename.startswith(_STDLIB) or filename.startswith("<"):
        return "the standard library"
    return None


@dataclass(frozen=True)
class Site:
    """Where a task was made: the first frame outside asyncio, and the user's stack if asked."""

    filename: str
    lineno: int
    function: str
    stack: str | None = None

    def __str__(self) -> str:
        if self.stack is not None:
            return f"  created at:\n{self.stack}"
        return f"  created at {self.filename}:{self.lineno}, in {self.function}\n"


def forget_task_sites() -> None:
    _creation_sites.clear()


def creation_site(task: asyncio.Task[Any]) -> Site | None:
    """Where ``task`` was made, if the test's loop made it."""
    made = _creation_sites.get(id(task))
    if made is None:
        return None
    _, code, lineno, stack = made
    return Site(code.co_filename, lineno, code.co_name, stack)


def track_task_creation(loop: asyncio.AbstractEventLoop, *, full_stacks: bool) -> None:
    """Remember where each task of ``loop`` is made, for the leak report (once per loop).

    By default only the file, line and function that made it (a short frame walk);
    with ``task_creation_stacks = True``, the whole stack too (slow).
    """
    previous = loop.get_task_factory()
    if getattr(previous, "_djat_full_stacks", None) == full_stacks:
        return
    previous = getattr(previous, "_djat_previous", previous)

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if previous is None:
            task: Any = asyncio.Task(coro, loop=loop, **kwargs)
        else:
            task = previous(loop, coro, **kwargs)
        caller: FrameType | None = sys._getframe(1)
        frame = caller
        while frame is not None and frame.f_code.co_filename.startswith(_ASYNCIO):
            frame = frame.f_back
        if frame is not None:
            _creation_sites[id(task)] = (
                weakref.ref(task),
                frame.f_code,
                frame.f_lineno,
                user_stack(caller) if full_stacks else None,
            )
        return task  # type: ignore[no-any-return]

    factory._djat_full_stacks = full_stacks  # type: ignore[attr-defined]
    factory._djat_previous = previous  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


def new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads started since ``before`` that are still running after a short grace."""
    current = threading.enumerate()
    if len(current) <= len(before) and before.issuperset(current):
        return set()  # nothing started (the usual case, quickly)
    # The loop's default executor (shut down with the loop), ours, and those of
    # Django's connection pools.
    kept = (*_OWN_THREADS, *_connection_pool_threads())
    started = {
        thread for thread in current if thread not in before and not thread.name.startswith(kept)
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


def _connection_pool_threads() -> tuple[str, ...]:
    """The names' prefix of the threads of Django's PostgreSQL connection pools
    (``OPTIONS["pool"]``): started when the DB thread first connects, which may be in
    a test, and kept for the process."""
    base = sys.modules.get("django.db.backends.postgresql.base")
    pools = getattr(getattr(base, "DatabaseWrapper", None), "_connection_pools", {})
    return tuple(f"{pool.name}-" for pool in pools.values())


def _join(threads: set[threading.Thread], grace: float = 0.05) -> None:
    deadline = now() + grace
    for thread in threads:
        thread.join(max(0.0, deadline - now()))


# Database connections opened off the DB thread while a test runs: they are
# outside the test's transaction, and nothing closes them.
_foreign_connections: list[tuple[str, Any]] | None = None


def on_connection_created(*, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: remember the DB thread's connections, and those
    opened off it while a test runs."""
    watched = _foreign_connections
    db = running_db_thread()
    if db is None or getattr(connection, "_djat_bridged", False):
        return  # a django-async-backend wrapper on the DB thread's connection (_asyncbackend)
    if db.owns(connection):
        db.connections.add(connection)
    elif watched is not None:
        watched.append((threading.current_thread().name, connection))


def watch_connections() -> None:
    global _foreign_connections
    _foreign_connections = []


def connections_left_open() -> list[tuple[str, Any]]:
    """The connections opened off the DB thread since ``watch_connections``, still open."""
    global _foreign_connections
    watched, _foreign_connections = _foreign_connections or [], None
    return [(thread, conn) for thread, conn in watched if _really_open(conn)]


def _really_open(connection: Any) -> bool:
    """Whether the driver's connection is open: not closed by Django, nor at the driver,
    nor SQLite in memory, which Django never closes (nor need it be)."""
    raw = connection.connection
    if raw is None or getattr(raw, "closed", False):
        return False
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            return False
        try:
            raw.total_changes  # noqa: B018  (sqlite3 has no "closed": a closed one raises)
        except Exception:
            return False
    return True


class Leaks:
    """What a test's loop and the process had when the test started, to report what it
    leaves behind: the kinds of ``checks`` (some of ``"tasks"``, ``"threads"``,
    ``"connections"``).

    A test's tasks are those made while it ran and still pending when it ends. On
    a loop that outlives the test (any ``loop_scope`` but ``"test"``), a task that
    an installed package's code made (a client's reader or keep-alive task, made
    when the test first used it) lives with the loop, and is not the test's.
    """

    def __init__(self, checks: frozenset[str], *, full_stacks: bool) -> None:
        self.checks = checks
        self.full_stacks = full_stacks
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_outlives_test = False
        self.threads_before = set(threading.enumerate()) if "threads" in checks else set()
        if "connections" in checks:
            watch_connections()

    def watch_tasks(self, loop: asyncio.AbstractEventLoop, *, outlives_test: bool) -> None:
        """M: the test's async code runs on ``loop`` (which may outlive it) from now on."""
        self.loop = loop
        self.loop_outlives_test = outlives_test
        if "tasks" in self.checks:
            forget_task_sites()
            track_task_creation(loop, full_stacks=self.full_stacks)

    def report(self, test: str) -> str | None:
        """M, with the loop stopped: what ``test`` left behind, or None."""
        tasks = (
            {
                task
                for task in self._made_tasks()
                # On a loop that outlives the test, not a package's (see above).
                if not (self.loop_outlives_test and _made_by_a_package(task))
                # asyncio's own aclose() of an unfinished async generator; closing
                # the loop finishes it.
                and type(task.get_coro()).__name__ != "async_generator_athrow"
            }
            if "tasks" in self.checks and self.loop is not None
            else set()
        )
        threads = new_threads(self.threads_before) if "threads" in self.checks else set()
        connections = connections_left_open() if "connections" in self.checks else []
        return leaks_report(test, tasks, threads, connections)

    def _made_tasks(self) -> Iterator[asyncio.Task[Any]]:
        """The test's tasks still pending on its loop: those made with ``create_task``
        (``ensure_future``, ``gather``, a ``TaskGroup``...) while it ran."""
        for ref, *_ in list(_creation_sites.values()):
            task = ref()
            if task is not None and not task.done() and task.get_loop() is self.loop:
                yield task


def _made_by_a_package(task: asyncio.Task[Any]) -> bool:
    made = _creation_sites.get(id(task))
    return made is not None and package_of(made[1].co_filename) not in (None, "djasynctest")


def task_name(task: asyncio.Task[Any]) -> str:
    """The task's name; its coroutine's where it has none.

    Python 3.13.0's ``create_task`` names a task that a task factory made ``str(None)``.
    """
    name = task.get_name()
    if name in (None, "None"):
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or repr(coro)
    return str(name)


def leaks_report(
    test: str,
    tasks: set[asyncio.Task[Any]],
    threads: set[threading.Thread],
    connections: list[tuple[str, Any]],
) -> str | None:
    parts = []
    for task in tasks:
        site = creation_site(task)
        made = "  (not made on the test's loop)\n" if site is None else str(site)
        parts.append(f"task {task_name(task)} ({task.get_coro()!r}) is still pending\n{made}")
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
        "into the next test. To stop reporting one kind, set leak_checks (e.g. "
        "leak_checks = ['tasks', 'connections']); task_creation_stacks = True shows "
        "each task's whole creation stack."
    )
