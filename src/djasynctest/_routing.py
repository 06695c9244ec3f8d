"""How async code under test reaches the DB thread: the one module that knows asgiref.

Django's async ORM, ``AsyncClient`` and the views it calls, async auth and
sessions all run their database work through asgiref's thread-sensitive
``sync_to_async``. asgiref picks the thread for such a call in this order:

1. the ``CurrentThreadExecutor`` of an enclosing ``async_to_sync`` call;
2. the executor of the current ``ThreadSensitiveContext``;
3. an executor registered for the running loop;
4. one process-wide thread.

A test enters ``ThreadSensitiveContext(executor=<DB thread>)`` (route 2, a
public API since asgiref 3.13) inside its ``contextvars.Context`` before its
first hook, so every task of the test sends its thread-sensitive calls to the
DB thread; each loop the library makes registers the DB thread for route 3
too, for the tasks that run in a context of their own. Request
handling that opens a ``ThreadSensitiveContext`` of its own (Django's
``ASGIHandler``) nests inside ours and keeps our executor. When the test ends
the context is exited: a task that outlives its test and still calls the ORM
gets asgiref's ``RuntimeError`` instead of writing into the next test.

Sync code that the DB thread runs for ``sync_to_async`` may call
``async_to_sync``; asgiref then sends the coroutine back to the loop that made
the call (route 1 brings its thread-sensitive calls back to the DB thread).
asgiref remembers that loop in a thread-local that it never clears, so work
sent to the DB thread directly, with no loop waiting on it, clears it first
(``forget_event_loop``): a stale loop there would make ``async_to_sync`` wait
forever on a loop that does not run.

A test's ``contextvars.Context`` is used by two threads in turn: the loop's
(async code) and the DB thread (sync hooks and tests). asgiref tags the value
of a ``Local`` (Django's active language and time zone, third-party ones) with
the thread that wrote it and hides it from every other thread, except where it
moves work itself (``sync_to_async``, ``async_to_sync``), where it re-homes
the values to the thread that takes the context over. ``run_in`` and
``claim_locals`` do the same at each of our hand-overs.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext

try:
    from asgiref.local import _Storage
except ImportError:  # an asgiref that does not tag Local values with their thread
    _Storage = None  # type: ignore[assignment,misc]

__unittest = True

T = TypeVar("T")


def enter_routing(executor: Executor) -> ThreadSensitiveContext:
    """Send thread-sensitive calls made in the current context to ``executor``.

    Call it inside the ``contextvars.Context`` to route (``context.run``), with
    or without a running loop: entering a ``ThreadSensitiveContext`` with an
    executor never suspends, so it needs no event loop.
    """
    routing = ThreadSensitiveContext(executor=executor)
    _finish_now(routing.__aenter__())  # type: ignore[no-untyped-call]
    return routing


def exit_routing(routing: ThreadSensitiveContext) -> None:
    """Undo ``enter_routing``, in the same context."""
    _finish_now(routing.__aexit__(None, None, None))  # type: ignore[no-untyped-call]


def _finish_now(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    msg = (
        "asgiref's ThreadSensitiveContext now suspends when entered or exited; this "
        "version of djasynctest does not support this asgiref version."
    )
    raise RuntimeError(msg)


def route_loop(loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
    """Route 3: thread-sensitive calls on ``loop`` from a context that is not routed.

    A task made with an empty context (asgiref's ``ApplicationCommunicator``,
    which channels' ``WebsocketCommunicator`` builds on, runs the application
    so) has no ``ThreadSensitiveContext``; its calls go to ``executor`` too.
    """
    AsyncToSync.loop_thread_executors[loop] = executor  # type: ignore[assignment]


def unroute_loop(loop: asyncio.AbstractEventLoop) -> None:
    AsyncToSync.loop_thread_executors.pop(loop, None)


def forget_event_loop() -> None:
    """Make ``async_to_sync`` on this thread start its own loop, not reuse a stale one."""
    SyncToAsync.threadlocal.main_event_loop = None


def _fresh_start_after_fork() -> None:
    # The child of a fork has only the thread that forked: asgiref's process-wide
    # executor would queue work for a thread the child does not have (and the
    # forking thread may remember an event loop of the parent's).
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
    forget_event_loop()


os.register_at_fork(after_in_child=_fresh_start_after_fork)


def asgirefs_own_executor() -> Executor:
    """The executor asgiref sends a thread-sensitive call to when nothing routes it."""
    return SyncToAsync.single_thread_executor


def process_wide_threads() -> set[threading.Thread]:
    """asgiref's own long-lived thread(s): started on first use, kept for the process."""
    return set(getattr(SyncToAsync.single_thread_executor, "_threads", ()))


# In a context: the thread that last claimed its Local values. Only our
# hand-overs move a test's context between threads without re-homing them.
_CLAIMED_BY: contextvars.ContextVar[int] = contextvars.ContextVar("djasynctest.claimed_by")


def claim_locals() -> None:
    """Make the asgiref ``Local`` values of the current context this thread's.

    Call it inside a context that another thread used last, before any code
    reads a ``Local`` in it: asgiref's own ``_restore_context`` does this where
    asgiref hands a context from one thread to another.
    """
    if _Storage is None:
        return
    ident = threading.get_ident()
    if _CLAIMED_BY.get(None) == ident:
        return  # this thread claimed it last, and no other ran in it since
    for var, value in contextvars.copy_context().items():
        if type(value) is _Storage and value.thread_id != ident:
            var.set(_Storage(ident, value.data))
    _CLAIMED_BY.set(ident)


def run_in(context: contextvars.Context, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``context.run(func, ...)`` on this thread, with the context's ``Local`` values claimed."""
    return context.run(_claimed, func, args, kwargs)


def _claimed(func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    __tracebackhide__ = True
    claim_locals()
    return func(*args, **kwargs)


def adopt(context: contextvars.Context) -> list[contextvars.Token[Any]]:
    """Set the variables of ``context``, which ran on another thread, in the current one.

    What asgiref's ``_restore_context`` does when a ``sync_to_async`` or
    ``async_to_sync`` call returns: what the other side set is seen here.
    Resetting the tokens it returns, newest first, undoes it.
    """
    tokens = []
    for var, value in context.items():
        try:
            if var.get() is value:
                continue
        except LookupError:
            pass
        tokens.append(var.set(value))
    claim_locals()
    return tokens
