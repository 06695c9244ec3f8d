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

The lean hop: asgiref's ``SyncToAsync.__call__`` wraps each call for a
general executor (``run_in_executor``, a ``concurrent.futures.Future`` chained
to an asyncio one, ``asyncio.shield``: one more loop iteration), which costs
more than handing the work to the DB thread itself. ``_lean_call`` replaces it
in the process: a call that asgiref would send to an executor registered with
``lean_executor`` (the DB thread, whose ``submit`` completes an asyncio future
with one ``call_soon_threadsafe``) takes one future and one wake-up each way;
every other call is asgiref's own. It keeps what asgiref's does: the
executor it picks (routes 1 to 4 above, and the error of a task that outlived
its ``ThreadSensitiveContext``), the context and ``Local`` values carried both
ways, the loop remembered for ``async_to_sync`` inside, the exception being
handled, the traceback down to the sync code, and cancellation (the call
returns at once while the sync code finishes, and a coroutine that
``async_to_sync`` runs for it is cancelled too). ``tests/test_hop.py`` runs
each of these through both and compares.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
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


# The lean hop -------------------------------------------------------------

_LEAN_EXECUTORS: set[type] = set()
_stock_call = SyncToAsync.__call__


def lean_executor(cls: type[Executor]) -> type[Executor]:
    """Class decorator: ``cls.submit``, called from a loop, returns an ``asyncio.Future``
    that its thread completes; thread-sensitive calls routed to it take the lean hop."""
    _LEAN_EXECUTORS.add(cls)
    return cls


def _lean_executor_for(call: SyncToAsync[Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
    # asgiref's choice of thread (SyncToAsync.__call__), up to where it finds a
    # lean executor; None where asgiref would choose anything else.
    if not call._thread_sensitive or getattr(AsyncToSync.executors, "current", None) is not None:
        return None
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is not None:
        if context._exited:
            return None  # asgiref raises its error
        executor = SyncToAsync.context_to_thread_executor.get(context)
    else:
        executor = AsyncToSync.loop_thread_executors.get(loop)
    return executor if type(executor) in _LEAN_EXECUTORS else None


async def _lean_call(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
    """``SyncToAsync.__call__``, for a call routed to a lean executor: one future, no
    executor wrapping, no shield; what asgiref guarantees kept (see the module's notes)."""
    __tracebackhide__ = True
    loop = asyncio.get_running_loop()
    executor = _lean_executor_for(self, loop)
    if executor is None:
        return await _stock_call(self, *args, **kwargs)
    context = contextvars.copy_context() if self.context is None else self.context
    task_context: list[asyncio.Task[Any]] = []
    outcome: list[Any] = []
    future = executor.submit(
        _lean_job, loop, sys.exc_info(), task_context, context, outcome, self.func, args, kwargs
    )
    if not isinstance(future, asyncio.Future):
        # A forked child's executor hands the work to asgiref's own thread.
        future = asyncio.wrap_future(future)
    try:
        return await future
    except asyncio.CancelledError:
        # As asgiref: cancel the task that async_to_sync runs for the sync
        # code, if any; if that task does not end cancelled, the sync code goes
        # on, and its outcome is the call's.
        if not task_context or (future.done() and not future.cancelled()):
            raise
        task = task_context[0]
        task.cancel()
        await task  # raises if it ended cancelled
        await executor.submit(int)  # the DB thread runs one job at a time: ours is done
        if outcome[0]:
            raise outcome[1] from None
        return outcome[1]
    finally:
        if self.context is None:
            _take_back(context)


def _lean_job(
    loop: asyncio.AbstractEventLoop,
    exc_info: Any,
    task_context: list[asyncio.Task[Any]],
    context: contextvars.Context,
    outcome: list[Any],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    # The lean executor's thread: what asgiref's thread_handler does.
    __tracebackhide__ = True
    threadlocal = SyncToAsync.threadlocal
    threadlocal.main_event_loop = loop
    threadlocal.main_event_loop_pid = os.getpid()
    threadlocal.task_context = task_context
    try:
        if exc_info[1] is not None:
            # Run inside the except block, so that sys.exc_info() is the caller's.
            try:
                raise exc_info[1]
            except BaseException:
                result = context.run(_claimed, func, args, kwargs)
        else:
            result = context.run(_claimed, func, args, kwargs)
    except BaseException as exc:
        outcome[:] = (True, exc)
        raise
    outcome[:] = (False, result)
    return result


def _take_back(context: contextvars.Context) -> None:
    """M, after the call: what the sync code set in ``context`` is set here, and the
    ``Local`` values are this thread's again (asgiref's ``_restore_context``)."""
    ident = threading.get_ident()
    for var, value in context.items():
        if _Storage is not None and type(value) is _Storage and value.thread_id != ident:
            value = _Storage(ident, value.data)
        elif var.get(_MISSING) is value:
            continue
        var.set(value)
    _CLAIMED_BY.set(ident)


_MISSING = object()


# For every thread-sensitive call of the process: those that go anywhere but to a
# lean executor find asgiref's own __call__ (one check more).
SyncToAsync.__call__ = _lean_call  # type: ignore[method-assign]
