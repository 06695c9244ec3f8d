"""Event loops and what runs on them: one mechanism for the test classes and the pytest plugin.

A ``Loop`` is an ``asyncio.Runner`` that lives as long as its scope:

``"test"``
    made for one test and closed after it (``IsolatedAsyncioTestCase``'s way);
``"class"``
    made when a class (or, under pytest, a class of tests) starts, closed after its last hook;
``"module"``
    shared by the classes and plugin-run tests of one test module: made by the first of them,
    closed when a test of another module starts (runners keep a module's tests together),
    at the end of the module under pytest, and at the latest when the process exits;
``"session"``
    shared by every class and plugin-run test of the process (each parallel worker has its
    own): closed once, after the last test (at the end of the pytest session, or at exit).

Closing a loop cancels the tasks still on it, shuts its async generators and its
default executor down, and closes it: nothing is left for the garbage collector to
complain about. Every loop is routed to the DB thread (route 3 of ``_routing``), for
tasks that run in a context of their own; a shared loop is routed again whenever it
is taken, as the DB thread may have been replaced since.

A ``Run`` is one test's use of a loop (or a longer-scoped pytest fixture's): it runs
coroutines watched by the blocking detector and the timeout, keeps the test's leak
bookkeeping, and adds the fix to the errors whose cause it knows.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]
import asyncio
import contextvars
import functools
import inspect
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from django.core.exceptions import SynchronousOnlyOperation

from djasynctest._blocking import run_watched
from djasynctest._blocking import sample as sample_block
from djasynctest._conf import LoopScope, Options
from djasynctest._dbthread import db_thread
from djasynctest._diagnostics import (
    BlockingWarning,
    Deadline,
    Leaks,
    PendingTaskWarning,
)
from djasynctest._routing import claim_locals, route_loop, unroute_loop
from djasynctest._watchdog import LoopWatch

__unittest = True

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None
Warn = Callable[[str, type[Warning]], None]

SYNC_ORM_HINT = (
    "djasynctest: in async tests and hooks, use the async ORM API "
    "(await Model.objects.acreate(...), await qs.acount(), [x async for x in qs]) "
    "or wrap sync code in asgiref.sync.sync_to_async(); either way it runs on the "
    "test's DB thread, inside the test's transaction."
)

CAPTURE_QUERIES_HINT = (
    "djasynctest: CaptureQueriesContext(connection) would count the queries of the "
    "event loop's thread, where none of the test's queries run. Use "
    "self.assertNumQueries(n), or self.captureQueries() for the list of queries "
    "(with or async with): both read the test's DB thread."
)

# What asyncio says when an object made on one loop (a lock, a queue, a future, a
# transport) is used on another, or after its loop was closed.
_OTHER_LOOP = ("attached to a different loop", "bound to a different event loop")
_CLOSED_LOOP = "Event loop is closed"
# By scope, named as the user names it: a plugin-run test's loop of its own is
# "function", as pytest names it. (The plugin's loop of package-scoped fixtures
# lasts the whole run: pytest scopes a plugin's package fixture to the session.)
_LIFETIMES = {
    "test": "each test has a loop of its own",
    "function": "each test has a loop of its own",
    "class": "each test class has a loop of its own",
    "module": "each test module has a loop of its own",
}


def other_loop_hint(scope: str) -> str:
    where = (
        'with @pytest.mark.djasynctest(loop_scope="session"), the ini option '
        "djasynctest_loop_scope = session,"
        if scope == "function"
        else 'on the class, with @pytest.mark.djasynctest(loop_scope="session"),'
    )
    return (
        f'djasynctest: an object bound to another event loop was used here: with loop_scope = "'
        f'{scope}", {_LIFETIMES[scope]}, so an object kept from an earlier one (a global async '
        'client, a lock, a queue) is bound to a loop that is gone. Set loop_scope = "session" '
        f'({where} or DJASYNCTEST = {{"LOOP_SCOPE": "session"}} in settings) to run every test '
        "on one loop, or make the object anew on each loop."
    )


class Loop:
    """An event loop of a scope, routed to the DB thread (M, the thread that runs it).

    ``scope``: one of the ``loop_scope`` values (made by the pytest plugin, in pytest's
    names: ``"function"``, and ``"package"`` for fixtures); for a ``runner`` made by
    another (pytest-asyncio), its pytest scope.
    """

    def __init__(
        self,
        scope: str,
        *,
        debug: bool = False,
        loop_factory: LoopFactory = None,
        runner: asyncio.Runner | None = None,
    ) -> None:
        self.scope = scope
        self.adopted = runner is not None  # another's runner: its owner chose the scope
        self.runner = runner or asyncio.Runner(debug=debug, loop_factory=loop_factory)
        # What runs a coroutine: the runner's own run() for another's runner, even
        # where it is replaced on the instance (pytest-asyncio's runners, see the
        # pytest plugin); for ours, run_on(), which does the same for less.
        self._run = (
            self.runner.run if runner is not None else functools.partial(run_on, self.runner)
        )
        self.loop = self.runner.get_loop()
        self.pid = os.getpid()
        self.closed = False
        self.users = 0  # the classes and tests running on it now (see entering_module)
        self.at_close: list[Callable[[], object]] = []
        if not self.adopted:
            self.route()
            _live[id(self.loop)] = self

    def route(self) -> None:
        route_loop(self.loop, db_thread())

    def run(self, coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
        """M: run ``coro`` to the end on this loop, in ``context`` (which D may have used last)."""
        __tracebackhide__ = True
        context.run(claim_locals)
        try:
            return self._run(coro, context=context)
        except SynchronousOnlyOperation as exc:
            add_note(
                exc,
                CAPTURE_QUERIES_HINT
                if _raised_in(exc, "CaptureQueriesContext.")
                else SYNC_ORM_HINT,
            )
            raise
        except RuntimeError as exc:
            if not self.adopted and self.scope in _LIFETIMES and bound_elsewhere(exc):
                add_note(exc, other_loop_hint(self.scope))
            raise

    def close(self, *, exiting: bool = False) -> None:
        """M: run the ``at_loop_close`` callbacks, newest first; then cancel what still runs
        on the loop, shut it down, and close it (once).

        ``exiting``: the interpreter is shutting down, and may start no thread (Python
        3.12): the loop's default executor is not joined from a new thread, as
        ``Runner.close`` does, but left to ``concurrent.futures``, which joins the
        threads of every executor at exit, after this."""
        if self.closed:
            return
        self.closed = True
        _live.pop(id(self.loop), None)
        if self.pid != os.getpid():
            return
        try:
            for callback in reversed(self.at_close):
                try:
                    self._run(_awaited(callback), context=contextvars.copy_context())
                except Exception as exc:
                    # Reported as asyncio reports a failing callback: closing goes on.
                    self.loop.call_exception_handler(
                        {"message": f"at_loop_close callback {callback!r} failed", "exception": exc}
                    )
        finally:
            try:
                unroute_loop(self.loop)
            finally:
                if exiting:
                    self.loop.shutdown_default_executor = _joined_at_exit  # type: ignore[method-assign]
                if self.adopted:
                    self.runner.close()
                else:
                    close_runner(self.runner)


def run_on(
    runner: asyncio.Runner, coro: Coroutine[Any, Any, T], *, context: contextvars.Context
) -> T:
    """M: ``runner.run(coro, context=context)``, without its costly handler for Ctrl-C.

    ``asyncio.Runner.run`` installs a ``functools.partial`` as the ``SIGINT``
    handler for each run, and reading it back (``signal.getsignal``) makes the
    ``signal`` module build, and drop, an error message with its ``repr``,
    which includes the task's: tens of microseconds per run before Python 3.12.
    This is the same run, with a handler whose ``repr`` costs nothing.
    """
    __tracebackhide__ = True
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("Runner.run() cannot be called from a running event loop")
    loop = runner.get_loop()
    task = loop.create_task(coro, context=context)
    handler: _OnSigint | None = None
    # _signal: signal's own functions, without the wrappers of the signal module that
    # turn numbers into enums and back (10 µs per run on Python 3.11).
    if (
        threading.current_thread() is threading.main_thread()
        and _signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        handler = _OnSigint(runner, task)
        try:
            _signal.signal(signal.SIGINT, handler)
        except ValueError:  # an interpreter whose main thread takes no signals
            handler = None
    runner._interrupt_count = 0  # type: ignore[attr-defined]
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if runner._interrupt_count > 0:  # type: ignore[attr-defined]
            uncancel = getattr(task, "uncancel", None)
            if uncancel is not None and uncancel() == 0:
                raise KeyboardInterrupt from None
        raise
    finally:
        if handler is not None and _signal.getsignal(signal.SIGINT) is handler:
            _signal.signal(signal.SIGINT, signal.default_int_handler)


def close_runner(runner: asyncio.Runner) -> None:
    """M: ``runner.close()``, without running the loop for shut-downs with nothing to do.

    ``asyncio.Runner.close`` cancels the loop's tasks, then runs the loop twice, to
    close its async generators and to join its default executor, even when there
    are none: about 40 µs for every test with a loop of its own. This closes the
    loop at once when it has no callback ready to run or timed (those runs would
    run what is due: a future's outcome that the DB thread handed over as the run
    was interrupted), no task left, no async generator alive and no default
    executor; otherwise it is ``runner.close()``.
    """
    if runner._state is not asyncio.runners._State.INITIALIZED:  # type: ignore[attr-defined]
        return
    loop = runner.get_loop()
    if (
        getattr(loop, "_ready", True)
        or getattr(loop, "_scheduled", True)
        or asyncio.all_tasks(loop)
        or getattr(loop, "_asyncgens", True)
        or getattr(loop, "_default_executor", True) is not None
    ):
        runner.close()
        return
    try:
        if runner._set_event_loop:  # type: ignore[attr-defined]
            asyncio.set_event_loop(None)
    finally:
        loop.close()
        runner._loop = None  # type: ignore[attr-defined]
        runner._state = asyncio.runners._State.CLOSED  # type: ignore[attr-defined]


class _OnSigint:
    """The runner's own handler for Ctrl-C (the first cancels the task, the next raise)."""

    __slots__ = ("runner", "task")

    def __init__(self, runner: asyncio.Runner, task: asyncio.Task[Any]) -> None:
        self.runner = runner
        self.task = task

    def __call__(self, signum: int, frame: Any) -> None:
        self.runner._on_sigint(signum, frame, self.task)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return "<djasynctest's SIGINT handler>"


async def _joined_at_exit(timeout: float | None = None) -> None:
    pass


async def _awaited(callback: Callable[[], object]) -> None:
    result = callback()
    if inspect.isawaitable(result):
        await result


# id(asyncio loop) -> the Loop that made it, while it is open.
_live: dict[int, Loop] = {}


def at_loop_close(callback: Callable[[], object], /) -> None:
    """Call ``callback`` on the running test loop just before it closes (see the docs).

    For what lives as long as the loop (a global async client's connections):
    ``at_loop_close(client.aclose)``. ``callback`` is a coroutine function or a
    plain one (anything else, such as the coroutine ``client.aclose()``, is a
    ``TypeError`` at the call); callbacks run newest first, each once however often
    it was given.
    One that raises is reported as asyncio reports a failing callback (the loop's
    exception handler logs it), and the loop still closes.
    """
    if not callable(callback):
        if inspect.iscoroutine(callback):
            callback.close()  # at_loop_close(client.aclose()): never to be awaited
        msg = (
            f"at_loop_close() was given {callback!r}; it must be a callable (a coroutine "
            "function or a plain one) that the loop calls before it closes, such as "
            "client.aclose."
        )
        raise TypeError(msg)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    loop = None if running is None else _live.get(id(running))
    if loop is None:
        msg = (
            "at_loop_close() registers a callback for the event loop of a djasynctest test: "
            "call it from an async test, hook or fixture that djasynctest runs."
        )
        raise RuntimeError(msg)
    if callback not in loop.at_close:
        loop.at_close.append(callback)


def add_note(exc: BaseException, note: str) -> None:
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _raised_in(exc: BaseException, qualname_prefix: str) -> bool:
    """Whether a frame of ``exc``'s traceback runs code whose qualified name starts so."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_qualname.startswith(qualname_prefix):
            return True
        tb = tb.tb_next
    return False


def bound_elsewhere(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(words in text for words in _OTHER_LOOP) or text == _CLOSED_LOOP


# --- Loops that outlive a class: one per module, one for the session ---------------

# (scope, module or "", loop_factory, debug) -> the live loop. Tests that ask for
# another factory or debug mode cannot share a loop: they get one of their own.
_shared: dict[tuple[Any, ...], Loop] = {}
_at_exit_in: int | None = None  # the process whose exit closes the shared loops


def shared_loop(scope: LoopScope, module: str, *, debug: bool, loop_factory: LoopFactory) -> Loop:
    """M: the live loop of ``module`` (scope ``"module"``) or of the process (``"session"``).

    It is made on first use; a loop that a test of another module needs closes the
    module loops of the modules before it.
    """
    global _at_exit_in
    assert scope in ("module", "session"), scope
    entering_module(module)
    key = (scope, module if scope == "module" else "", loop_factory, debug)
    loop = _shared.get(key)
    if loop is not None and not loop.closed and not loop.loop.is_running():
        loop.route()
        return loop
    if loop is not None and loop.loop.is_running():
        # A test run from inside a test (on another thread) while the shared
        # loop runs the outer one: it cannot share it.
        return Loop("test", debug=debug, loop_factory=loop_factory)
    if _at_exit_in != os.getpid():
        _at_exit_in = os.getpid()
        at_shutdown(functools.partial(close_shared_loops, exiting=True))
        if multiprocessing.parent_process() is not None:
            # A worker of multiprocessing (manage.py test --parallel) ends with
            # os._exit(): before Python 3.13, with no atexit, only its finalizers.
            multiprocessing.util.Finalize(None, close_shared_loops, exitpriority=100)
    loop = _shared[key] = Loop(scope, debug=debug, loop_factory=loop_factory)
    return loop


def at_shutdown(callback: Callable[[], object]) -> None:
    """Call ``callback`` when the interpreter starts to shut down, while it can still start
    threads: closing a loop joins its default executor from a new thread, which Python
    3.12 refuses to start in an ``atexit`` callback ("can't create new thread at
    interpreter shutdown"). ``threading``'s own exit hooks run before those, and before
    it joins the threads left running (``concurrent.futures`` registers its own there)."""
    threading._register_atexit(callback)  # type: ignore[attr-defined]


def entering_module(module: str) -> None:
    """M: a test of ``module`` starts: the module loops of other modules are done, but for
    one a class or a test still runs on (a test run from inside another test)."""
    _forget_forked()
    for key, loop in list(_shared.items()):
        if key[0] == "module" and key[1] != module and not loop.users:
            del _shared[key]
            loop.close()


def close_shared_loops(
    *, scope: LoopScope | None = None, module: str | None = None, exiting: bool = False
) -> None:
    """M: close the shared loops (of ``scope``, of ``module``), newest first."""
    _forget_forked()
    for key in reversed(list(_shared)):
        if (scope is None or key[0] == scope) and (module is None or key[1] == module):
            _shared.pop(key).close(exiting=exiting)


def _forget_forked() -> None:
    # A forked child (a parallel worker) inherits its parent's loops: not its to close.
    for key in [key for key, loop in _shared.items() if loop.pid != os.getpid()]:
        del _shared[key]


def loop_for(scope: LoopScope, module: str, *, debug: bool, loop_factory: LoopFactory) -> Loop:
    """M: a loop for a class or a test of ``module`` that asks for ``scope``: its own
    (``"test"``, ``"class"``), or the shared one."""
    if scope in ("module", "session"):
        return shared_loop(scope, module, debug=debug, loop_factory=loop_factory)
    entering_module(module)
    return Loop(scope, debug=debug, loop_factory=loop_factory)


# --- One test on a loop --------------------------------------------------------------


class Run:
    """What one test runs on a loop, watched; or, with ``test=False``, a fixture of a
    longer scope (each of whose runs gets the timeout on its own, and no leak report).

    ``loop`` may be None for a test whose code is all sync: it needs a loop only if
    some async code turns up (an async cleanup), and gets one then (``attach``).
    ``warn(text, category)`` issues a warning where the user looks (the test's line).
    """

    def __init__(
        self, loop: Loop | None, opts: Options, name: str, *, warn: Warn, test: bool = True
    ) -> None:
        self.loop: Loop | None = None
        self.opts = opts
        self.name = name
        self.warn = warn
        self.test = test
        self._closed = False
        self.watch: LoopWatch | None = None
        self.deadline = (
            Deadline(None, opts.timeout, name) if test and opts.timeout is not None else None
        )
        self.leaks = (
            Leaks(opts.leak_checks, full_stacks=opts.task_creation_stacks)
            if test and opts.leak_checks
            else None
        )
        if loop is not None:
            self.attach(loop)

    def attach(self, loop: Loop) -> None:
        """M: the test's async code runs on ``loop`` from now on."""
        self.loop = loop
        opts = self.opts
        if opts.blocking_threshold is not None:
            self.watch = LoopWatch(
                loop.loop,
                opts.blocking_threshold,
                functools.partial(sample_block, allowed=opts.blocking_allowed),
            )
        if self.deadline is not None:
            self.deadline.loop = loop.loop
        if self.leaks is not None:
            self.leaks.watch_tasks(loop.loop, outlives_test=loop.scope not in ("test", "function"))
        if self.test:
            loop.users += 1

    def run(self, coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
        """M: run ``coro`` to the end in ``context``, and report what the watch saw."""
        __tracebackhide__ = True
        loop = self.loop
        assert loop is not None, "no loop attached"
        deadline = self.deadline
        if deadline is None and not self.test and self.opts.timeout is not None:
            deadline = Deadline(loop.loop, self.opts.timeout, self.name)
        try:
            return run_watched(
                functools.partial(loop.run, coro, context),
                coro,
                self.name,
                watch=self.watch,
                deadline=deadline,
                mode=self.opts.blocking_mode,
                warn=lambda text: self.warn(text, BlockingWarning),
            )
        finally:
            if deadline is not None and deadline is not self.deadline:
                deadline.cancel()

    def check_leaks(self) -> None:
        """M, with the loop stopped, after the test's own teardown: warn of what it left
        (once)."""
        __tracebackhide__ = True
        leaks, self.leaks = self.leaks, None
        report = None if leaks is None else leaks.report(self.name)
        if report is not None:
            self.warn(report, PendingTaskWarning)

    def close(self) -> None:
        """M: end the test's timeout (the loop is its owner's to close); once."""
        if self.deadline is not None:
            self.deadline.cancel()
        if self.test and not self._closed and self.loop is not None:
            self.loop.users -= 1
        self._closed = True
