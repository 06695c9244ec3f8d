"""Class-level hooks: where ``setUpClass`` and friends run, and ``async def setUpTestData``.

unittest (and pytest) call ``setUpClass``, ``tearDownClass`` and
``doClassCleanups`` on the test's thread (M). Each class that defines one gets
a wrapper that runs the whole call, the user's code and Django's chain behind
``super()``, on the connection objects of the DB thread (D), so that the
class atomics, fixtures and ``setUpTestData`` open their transactions there:
in place on M, which borrows D's objects from ``setUpClass`` until the class
is done (``_dbthread.lend_connections``); with a ``timeout``, on D, which M
can then give up on. An ``async def setUpTestData`` runs on the class's loop
on M (in place), or on a loop M runs while D sets the class up (with a
timeout), its ORM calls on D either way.

What the library keeps for a class, from its ``setUpClass`` to its last hook,
is one ``ClassState`` (``state_of``). Each class has a ``contextvars.Context``
of its own, made from M's when the class is set up: its class-level hooks run
in it, on whichever thread, so that what they set (``translation.activate``,
``cls.enterClassContext(...)``, any context variable) is there for its tests,
each of which runs in a copy of it, and gone for the next class.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from django.db import connections, transaction
from django.test import SimpleTestCase, TestCase, TransactionTestCase

from djasynctest._affinity import pin_together
from djasynctest._asyncbackend import bridge as bridge_async_backend
from djasynctest._asyncbackend import uses_async_backend
from djasynctest._bootstrap import ensure_test_databases
from djasynctest._conf import Options, options
from djasynctest._dbthread import (
    DBThread,
    db_thread,
    lend_connections,
    outcome,
    running_db_thread,
)
from djasynctest._dbtools import (
    connect_receivers,
    connection_state,
    give_connection_state,
    loop_running,
)
from djasynctest._diagnostics import Deadline, stop_db_thread_on_interrupt
from djasynctest._loop import Loop, loop_for
from djasynctest._routing import adopt, enter_routing, exit_routing, run_in

__unittest = True

T = TypeVar("T")


class ClassState:
    """What the library keeps for a test class from its ``setUpClass`` to its last hook
    (``doClassCleanups``, which unittest and pytest call after a failed ``setUpClass``
    too), in the class's own ``__dict__``: a subclass has its own."""

    __slots__ = (
        "cleaned_up",
        "context",
        "give_back",
        "loop",
        "lost",
        "next_pre_setup",
        "options",
        "routing",
        "set_up",
        "unpin",
    )

    def __init__(self, opts: Options) -> None:
        self.options = opts
        self.context: contextvars.Context | None = None  # the class's own
        self.routing: ThreadSensitiveContext | None = None  # the context's, to the DB thread
        # M has D's connection objects for the class until this gives them back.
        self.give_back: Callable[[], None] | None = None
        self.unpin: Callable[[], None] | None = None  # the threads' CPU masks, restored
        self.loop: ClassLoop | None = None  # with any loop_scope but "test"
        # Set up, until tearDownClass: a test's rollback may set the next test up.
        self.set_up = False
        self.next_pre_setup: Future[Any] | None = None  # queued for the next test
        self.lost: str | None = None  # why the class's transaction is gone, if it is
        self.cleaned_up = False  # tearDownClass ran the class cleanups already


def state_of(klass: type) -> ClassState | None:
    """``klass``'s state, between its ``setUpClass`` and its last hook."""
    return klass.__dict__.get("_djat_state")


def class_options(klass: type) -> Options:
    """The options of ``klass``: those it was set up with, or (outside its set-up) its own."""
    state = state_of(klass)
    return options(klass) if state is None else state.options


def class_loop(klass: type) -> ClassLoop | None:
    """The loop of ``klass`` while it is set up, with any ``loop_scope`` but ``"test"``."""
    state = state_of(klass)
    return None if state is None else state.loop


CLASS_HOOKS = ("setUpClass", "tearDownClass", "doClassCleanups")
# Set while a class hook runs in place (M), for the hooks it calls through super().
_IN_CLASS_HOOK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "djasynctest.in_class_hook", default=False
)
# A class cleanup of Django's that only makes sense on the DB thread.
_REMOVE_DATABASES_FAILURES = SimpleTestCase._remove_databases_failures.__func__  # type: ignore[attr-defined]


# How unittest and Django start a test: a class before the mixin in the MRO that
# defines one of these would run the test its own way.
_ENTRY_POINTS = ("__call__", "run", "debug", "_setup_and_call")


def check_bases(cls: type, mixin: type) -> None:
    """The mixin must come before Django's test cases, and before any class that
    starts tests its own way; a helper subclass of ``SimpleTestCase`` may come first."""
    mro = cls.__mro__
    for base in mro[: mro.index(mixin)]:
        if (
            issubclass(base, SimpleTestCase)
            and not issubclass(base, mixin)
            and (
                base.__module__.startswith("django.")
                or any(name in vars(base) for name in _ENTRY_POINTS)
            )
        ):
            msg = (
                f"AsyncTestMixin must come before {base.__qualname__} in the bases of "
                f"{cls.__module__}.{cls.__qualname__}: "
                f"class {cls.__name__}(AsyncTestMixin, {base.__name__})."
            )
            raise TypeError(msg)
    if not issubclass(cls, SimpleTestCase):
        msg = (
            f"{cls.__module__}.{cls.__qualname__} has AsyncTestMixin but no Django test "
            f"case: add one after it, as in class {cls.__name__}(AsyncTestMixin, "
            f"django.test.TestCase), or subclass djasynctest.AsyncTestCase."
        )
        raise TypeError(msg)


def run_class_hook_on_db_thread(cls: type, name: str) -> None:
    """Make the class hook ``name`` defined on ``cls`` run on the DB thread.

    unittest (and pytest) call ``setUpClass``, ``tearDownClass`` and
    ``doClassCleanups`` on the test's thread; the wrapper sends the whole call,
    the user's code and Django's chain behind ``super()``, to the DB thread.
    """
    attr = cls.__dict__.get(name)
    if attr is None:
        # Inherited: from the mixin's side (wrapped already), or from a helper
        # SimpleTestCase subclass that comes before the mixin (wrapped here).
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        attr = vars(owner)[name]
    func = getattr(attr, "__func__", attr)
    if inspect.iscoroutinefunction(func):
        msg = (
            f"{cls.__module__}.{cls.__qualname__}.{name} is async, but unittest calls "
            f"{name} synchronously: make it a plain classmethod (the sync ORM works "
            f"there, in the class's transaction)."
        )
        raise TypeError(msg)
    if not isinstance(attr, classmethod) or getattr(func, "_djat_db_thread", False):
        return

    @functools.wraps(func)
    def on_db_thread(klass: Any, /, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        db = db_thread(replace_stopped=name == "setUpClass")
        if db.is_current() or _IN_CLASS_HOOK.get():
            # Called through super() from a hook already running (on D, or in place).
            return func(klass, *args, **kwargs)
        if db.interrupted:
            # Ctrl-C ended the run and, with the DB thread, the class's transaction;
            # pytest still tears classes down.
            return None
        state = state_of(klass)
        if name == "doClassCleanups" and state is not None and state.cleaned_up:
            # Run by tearDownClass already (_tear_down).
            _class_done(klass)
            return None
        if db.stopped and name == "doClassCleanups":
            # unittest calls doClassCleanups unguarded: run the class cleanups
            # here, but not Django's, which restores the connections of D.
            klass._class_cleanups[:] = [
                cleanup
                for cleanup in klass._class_cleanups
                if getattr(cleanup[0], "__func__", None) is not _REMOVE_DATABASES_FAILURES
            ]
            try:
                return func(klass, *args, **kwargs)
            finally:
                _class_done(klass)
        try:
            if name == "setUpClass":
                return _set_up_class(db, func, klass, *args, **kwargs)
            if name == "tearDownClass":
                return _tear_down_class(db, func, klass, *args, **kwargs)
        except KeyboardInterrupt:
            stop_db_thread_on_interrupt()
            raise
        try:
            return _on_its_thread(db, klass, _in_class_context, func, klass, *args, **kwargs)
        finally:
            _class_done(klass)

    on_db_thread._djat_db_thread = True  # type: ignore[attr-defined]
    setattr(cls, name, classmethod(on_db_thread))


def _set_up_class(
    db: DBThread, func: Callable[..., Any], klass: Any, /, *args: Any, **kwargs: Any
) -> Any:
    # M.
    __tracebackhide__ = True
    # What a run of the class whose doClassCleanups never came (debug(), Ctrl-C) left
    # undone: its loop, its context's routing, its threads' CPU masks.
    _class_done(klass)
    opts = options(klass)
    state = klass._djat_state = ClassState(opts)
    if opts.loop_scope == "test":
        for hook in ("asyncSetUpClass", "asyncTearDownClass"):
            if _defines(klass, hook):
                msg = (
                    f"{klass.__qualname__}.{hook} needs an event loop that lasts the whole "
                    f'class: set loop_scope = "class" on {klass.__qualname__}, or "session" '
                    '(or "module") to share one loop with other classes, as a client kept '
                    "between classes needs."
                )
                raise TypeError(msg)
    ensure_test_databases(_aliases(klass))
    connect_receivers()
    if opts.cpu_affinity:
        state.unpin = pin_together(db.thread.native_id)
    set_up = _rolled_back_on_failure(_with_runner_state(func), klass)  # reads M's own
    if opts.timeout is None:
        # Sync class hooks run here, on D's connection objects, until the class is done.
        state.give_back = lend_connections(db)
    context = state.context = contextvars.copy_context()
    # Thread-sensitive calls made in the class's context, and in its tests'
    # (copies of it), go to D, until the class is done; a test that runs async
    # code routes its own context too (see AsyncTestMixin._callSetUp).
    state.routing = context.run(enter_routing, db)
    if (
        issubclass(klass, TestCase)
        and uses_async_backend()
        and klass._databases_support_transactions()
    ):
        context.run(bridge_async_backend, _aliases(klass))
    if lends_connections(klass):
        return _set_up_class_in_place(db, set_up, klass, context, opts, args, kwargs)
    if not isinstance(inspect.getattr_static(klass, "setUpTestData", None), _AsyncSetUpTestData):
        # No async setUpTestData: D sets the class up in the class's context, in one
        # hand-over, with no event loop running.
        job = db.submit_hosted(run_in, context, set_up, klass, *args, **kwargs)
        try:
            result = _within_timeout_sync(job, klass, "setUpClass")
            if opts.loop_scope != "test":
                _start_class_loop(db, klass, context, opts)
        except asyncio.CancelledError as exc:
            raise _cancelled(klass, "setUpClass") from exc
        state.set_up = True
        return result
    # M runs an event loop while D sets the class up, so that an async
    # setUpTestData, called by Django through async_to_sync on D, runs here on
    # M with its ORM calls sent back to D. sync_to_async takes the class
    # context to D and brings what the hooks set back into it.
    call = _on_db_thread_from_loop(set_up, klass, *args, **kwargs)
    loop = loop_for(
        opts.loop_scope, klass.__module__, debug=opts.loop_debug, loop_factory=opts.loop_factory
    )
    try:
        if loop.scope == "test":
            try:
                result = _within_timeout(
                    functools.partial(loop.run, context=context),
                    loop.loop,
                    call,
                    klass,
                    "setUpClass",
                )
            finally:
                loop.close()
        else:
            class_loop = state.loop = ClassLoop(context, loop)
            try:
                result = _within_timeout(class_loop.run, loop.loop, call, klass, "setUpClass")
            except BaseException:
                # Closing the loop first cancels what D may still wait for (an
                # async setUpTestData that timed out), then D rolls back.
                _close_class_loop(klass)
                db.call(undo_class_set_up, klass)
                raise
            _start_class_loop(db, klass, context, opts, class_loop)
    except asyncio.CancelledError as exc:
        raise _cancelled(klass, "setUpClass") from exc
    state.set_up = True
    return result


def _set_up_class_in_place(
    db: DBThread,
    set_up: Callable[..., Any],
    klass: Any,
    context: contextvars.Context,
    opts: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """M: set the class up here, in its context, on D's connection objects.

    An ``async def setUpTestData`` runs on the class's loop (a loop of its own
    with a loop per test), here too, its ORM calls on D.
    """
    __tracebackhide__ = True
    class_loop = None
    if opts.loop_scope != "test" or isinstance(
        inspect.getattr_static(klass, "setUpTestData", None), _AsyncSetUpTestData
    ):
        class_loop = _new_class_loop(klass, context, opts)
    try:
        db.idle()
        result = run_in(context, _as_class_hook, set_up, klass, *args, **kwargs)
    except BaseException as exc:
        _close_class_loop(klass)
        if isinstance(exc, asyncio.CancelledError):
            raise _cancelled(klass, "setUpClass") from exc
        raise
    if opts.loop_scope == "test":
        _close_class_loop(klass)  # it ran setUpTestData; each test has a loop of its own
    else:
        _start_class_loop(db, klass, context, opts, class_loop)
    _state(klass).set_up = True
    return result


def _as_class_hook(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """M, in the class's context: ``func`` as a class hook run in place, whose calls to
    the hooks of its bases through ``super()`` run in place too."""
    __tracebackhide__ = True
    token = _IN_CLASS_HOOK.set(True)
    try:
        return func(*args, **kwargs)
    finally:
        _IN_CLASS_HOOK.reset(token)


def lends_connections(klass: Any) -> bool:
    """Whether M has D's connection objects for ``klass`` (set up in place, until it is
    done): its tests need not borrow them each."""
    state = state_of(klass)
    return state is not None and state.give_back is not None


def _on_its_thread(db: DBThread, klass: Any, func: Callable[..., T], /, *args: Any) -> T:
    """M: ``func(*args)`` where ``klass`` runs its sync class hooks: here, once D is
    idle, or on D."""
    __tracebackhide__ = True
    if lends_connections(klass):
        db.idle()
        return func(*args)
    return db.call(func, *args)


def _start_class_loop(
    db: DBThread,
    klass: Any,
    context: contextvars.Context,
    opts: Any,
    class_loop: ClassLoop | None = None,
) -> None:
    """M, once the class is set up: its loop (made now, unless setUpTestData made it),
    and ``asyncSetUpClass`` on it, if the class has one; a failure rolls the class back."""
    __tracebackhide__ = True
    try:
        if class_loop is None:
            class_loop = _new_class_loop(klass, context, opts)
        if _defines(klass, "asyncSetUpClass") or _defines(klass, "_djat_class_started"):
            _within_timeout(
                class_loop.run,
                class_loop.loop.loop,
                _class_started(klass),
                klass,
                "asyncSetUpClass",
            )
    except BaseException:
        _close_class_loop(klass)
        _on_its_thread(db, klass, undo_class_set_up, klass)
        raise


async def _class_started(klass: Any) -> None:
    await klass._djat_class_started()
    try:
        await klass.asyncSetUpClass()
    except BaseException:
        await klass._djat_class_ending()
        raise


async def _class_ending(klass: Any) -> None:
    try:
        await klass.asyncTearDownClass()
    finally:
        await klass._djat_class_ending()


def _new_class_loop(klass: Any, context: contextvars.Context, opts: Any) -> ClassLoop:
    """M: the loop of ``klass``'s scope (a new one for ``"test"``), as the class's loop."""
    loop = loop_for(
        opts.loop_scope, klass.__module__, debug=opts.loop_debug, loop_factory=opts.loop_factory
    )
    class_loop = _state(klass).loop = ClassLoop(context, loop)
    return class_loop


class ClassLoop:
    """The loop of a class whose ``loop_scope`` is not ``"test"`` (M), running in the
    class's context (routed to the DB thread, so that global async clients made in
    ``asyncSetUpClass`` can reach the ORM too)."""

    def __init__(self, context: contextvars.Context, loop: Loop) -> None:
        self.loop = loop
        self.context = context
        loop.users += 1

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        __tracebackhide__ = True
        return self.loop.run(coro, self.context)

    def close(self) -> None:
        """M, after the class's last hook: a loop of a module or the session lives on."""
        self.loop.users -= 1
        if self.loop.scope in ("test", "class"):
            self.loop.close()


def _within_timeout(
    run: Callable[[Coroutine[Any, Any, T]], T],
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    klass: Any,
    hook: str,
) -> T:
    """M: ``run(coro)`` on ``loop``, failing with ``TestTimeout`` after the class's ``timeout``."""
    __tracebackhide__ = True
    timeout = class_options(klass).timeout
    if timeout is None:
        return run(coro)
    deadline = Deadline(loop, timeout, f"{klass.__qualname__}.{hook}", label=hook)
    deadline.running(coro)
    try:
        return run(coro)
    except asyncio.CancelledError:
        if deadline.report is None:
            raise
        raise deadline.error() from None
    finally:
        deadline.cancel()


def _within_timeout_sync(job: Future[T], klass: Any, hook: str) -> T:
    """M: the outcome of ``job`` (D's), failing with ``TestTimeout`` after the class's
    ``timeout``."""
    __tracebackhide__ = True
    timeout = class_options(klass).timeout
    if timeout is None:
        return outcome(job)
    return Deadline(None, timeout, f"{klass.__qualname__}.{hook}", label=hook).result(job)


def _rolled_back_on_failure(func: Callable[..., T], klass: Any) -> Callable[..., T]:
    @functools.wraps(func)
    def set_up(*args: Any, **kwargs: Any) -> T:
        # D.
        __tracebackhide__ = True
        try:
            return func(*args, **kwargs)
        except BaseException:
            undo_class_set_up(klass)
            raise

    return set_up


def undo_class_set_up(klass: Any) -> None:
    """D: roll back the class atomics Django opened in ``setUpClass`` if they are still
    open, and close the connections, as Django's ``tearDownClass`` does.

    unittest calls no ``tearDownClass`` after a failed ``setUpClass``, and Django
    rolls its class atomics back only when fixtures or ``setUpTestData`` raise an
    ``Exception``: not when the user's code after ``super().setUpClass()`` raises,
    nor for a ``CancelledError``. Nor does anything when a ``tearDownClass`` raises
    before it calls ``super()``. A connection left open would also keep the runner
    from dropping the test database at the end of the run.
    """
    atomics = klass.__dict__.get("cls_atomics") or {}
    for alias, atomic in reversed(atomics.items()):
        if atomic in connections[alias].atomic_blocks:
            transaction.set_rollback(True, using=alias)
            atomic.__exit__(None, None, None)
    for connection in connections.all(initialized_only=True):
        connection.close()


def _cancelled(klass: Any, hook: str) -> RuntimeError:
    # A CancelledError is no Exception: unittest would let it end the whole run.
    return RuntimeError(
        f"{klass.__qualname__}.{hook} was cancelled (an asyncio.CancelledError, shown above, "
        "in a class-level hook); the class is rolled back and its tests are not run."
    )


def _tear_down_class(
    db: DBThread, func: Callable[..., Any], klass: Any, /, *args: Any, **kwargs: Any
) -> Any:
    # M.
    __tracebackhide__ = True
    state = state_of(klass)
    class_loop = None
    if state is not None:
        class_loop, state.set_up, state.lost = state.loop, False, None
    unused = take_next_pre_setup(klass)
    try:
        try:
            if class_loop is not None and (
                _defines(klass, "asyncTearDownClass") or _defines(klass, "_djat_class_ending")
            ):
                _within_timeout(
                    class_loop.run,
                    class_loop.loop.loop,
                    _class_ending(klass),
                    klass,
                    "asyncTearDownClass",
                )
        finally:
            result = _on_its_thread(db, klass, _tear_down, unused, func, klass, args, kwargs)
    except asyncio.CancelledError as exc:
        raise _cancelled(klass, "tearDownClass") from exc
    return result


def _tear_down(
    unused: Future[Any] | None,
    func: Callable[..., T],
    klass: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    # D (in one hand-over) or M in place: undo the set-up queued for a next test that never came,
    # run tearDownClass (in the class's context), end the class atomics, and run the
    # class cleanups, which unittest and pytest call right after tearDownClass
    # whether it failed or not (doClassCleanups then has nothing left to do).
    __tracebackhide__ = True
    _undo_unused_pre_setup(unused)
    try:
        try:
            result = _in_class_context(func, klass, *args, **kwargs)
        finally:
            undo_class_set_up(klass)
    except Exception:
        _in_class_context(_do_class_cleanups, klass)
        raise
    _in_class_context(_do_class_cleanups, klass)
    return result


def _do_class_cleanups(klass: Any) -> None:
    # D, in the class's context. Run once: unittest's own does not raise, and one that
    # does is reported with tearDownClass, not run again.
    try:
        klass.doClassCleanups()
    finally:
        state = state_of(klass)
        if state is not None:
            state.cleaned_up = True


def check_class_transaction(case: Any) -> None:
    """D, after a test's rollback: note when a connection of a ``TestCase`` was lost.

    A connection that broke (the server ended it, the network went) took the
    class's transaction, with its fixtures and ``setUpTestData``, with it: the
    class's remaining tests fail with that cause rather than run without their
    data; ``tearDownClass`` ends the broken atomics and the next class reconnects.
    """
    cls: Any = type(case)
    state = state_of(cls)
    if not issubclass(cls, TestCase) or state is None or state.lost is not None:
        return  # no class transaction (a test run on its own), or lost already
    for alias in _aliases(cls):
        connection = connections[alias]
        # errors_occurred: Django's own flag, set by a failed query; cheap.
        if connection.errors_occurred and not connection.is_usable():
            state.lost = (
                f"The connection to the database {alias!r} was lost during {case.id()}, "
                f"and the transaction of {cls.__qualname__}, with its fixtures and "
                "setUpTestData, went with it: the class's remaining tests cannot run. "
                "The next class opens a new connection."
            )
            return


def raise_if_class_transaction_lost(klass: Any) -> None:
    state = state_of(klass)
    if state is not None and state.lost is not None:
        raise RuntimeError(state.lost)


def queue_next_pre_setup(case: Any) -> None:
    """D, right after a test's rollback: queue the next test's per-test setup.

    The test's thread (M) waits for the rollback, but no longer for the next
    test's setup: D does it while M closes one event loop and makes the next.
    It is only done where undoing it is cheap (``TestCase`` on databases with
    savepoints: a savepoint; ``SimpleTestCase``: nothing), because when no test
    of the class follows, ``tearDownClass`` undoes it.
    """
    cls: Any = type(case)
    state = state_of(cls)
    if state is None or not state.set_up or state.lost is not None:
        return  # a test run on its own, outside setUpClass/tearDownClass; or no transaction
    if issubclass(cls, TestCase):
        if not (cls._databases_support_transactions() and cls._databases_support_savepoints()):
            return
    elif issubclass(cls, TransactionTestCase):
        return

    def pre_setup() -> Any:
        case._pre_setup()
        return case

    state.next_pre_setup = db_thread().submit(pre_setup)


def take_next_pre_setup(klass: Any) -> Future[Any] | None:
    """M: the per-test setup queued for the next test of ``klass``, if any; it is now taken."""
    state = state_of(klass)
    if state is None:
        return None
    pending, state.next_pre_setup = state.next_pre_setup, None
    return pending


def _undo_unused_pre_setup(pending: Future[Any] | None) -> None:
    # D, before tearDownClass: D ran the queued setup before this job.
    if pending is not None and pending.exception() is None:
        pending.result()._post_teardown()


def _in_class_context(func: Callable[..., T], klass: Any, /, *args: Any, **kwargs: Any) -> T:
    """D, or M in place: ``func(klass, ...)`` as a class hook, in the class's context (when
    the class was set up)."""
    __tracebackhide__ = True
    context = class_context(klass)
    if context is None:
        return _as_class_hook(func, klass, *args, **kwargs)
    result: T = run_in(context, _as_class_hook, func, klass, *args, **kwargs)
    return result


def class_context(klass: type) -> contextvars.Context | None:
    """The context of ``klass`` between its ``setUpClass`` and its class cleanups."""
    state = state_of(klass)
    return None if state is None else state.context


def _class_done(klass: Any) -> None:
    # M, after the class's last hook (doClassCleanups, which unittest and pytest
    # call after a failed setUpClass too): nothing of it reaches the next class.
    state = state_of(klass)
    if state is None:
        return
    try:
        _close_class_loop(klass)
    finally:
        del klass._djat_state
        try:
            _exit_class_routing(state)
        finally:
            try:
                if state.give_back is not None:
                    state.give_back()
            finally:
                if state.unpin is not None:
                    state.unpin()


def _exit_class_routing(state: ClassState) -> None:
    if state.context is None or state.routing is None:
        return
    db = running_db_thread()
    if db is not None and db.abandoned_by is not None:
        # The context may still be entered by the sync code the DB thread was
        # left to (a setUpClass stuck past its timeout); nothing uses it again.
        return
    state.context.run(exit_routing, state.routing)


def _close_class_loop(klass: Any) -> None:
    # M, after the class's last hook, or when its set-up failed.
    state = state_of(klass)
    if state is not None and state.loop is not None:
        loop, state.loop = state.loop, None
        loop.close()


def _state(klass: type) -> ClassState:
    state = state_of(klass)
    assert state is not None, f"{klass.__qualname__} is not set up"
    return state


def default_hook(func: Callable[..., T]) -> Callable[..., T]:
    """Mark a hook of the mixin that does nothing unless a subclass overrides it."""
    func._djat_default = True  # type: ignore[attr-defined]
    return func


def _defines(klass: type, name: str) -> bool:
    return not getattr(getattr(klass, name), "_djat_default", False)


async def _on_db_thread_from_loop(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    # In the class's context, which routes to D.
    return await sync_to_async(func)(*args, **kwargs)


def _with_runner_state(func: Callable[..., T]) -> Callable[..., T]:
    """Give the DB thread's connections what M's know (see ``connection_state``)."""
    state = connection_state()

    @functools.wraps(func)
    def with_state(*args: Any, **kwargs: Any) -> T:
        # D.
        give_connection_state(state)
        return func(*args, **kwargs)

    return with_state


def _aliases(cls: type[SimpleTestCase]) -> set[str]:
    databases = cls.databases
    return set(connections) if databases == "__all__" else set(databases)


class _AsyncSetUpTestData:
    """Stands in for an ``async def setUpTestData`` so that Django can call it.

    Django calls ``cls.setUpTestData()`` synchronously, on the DB thread: with
    no loop running there, the coroutine runs through ``async_to_sync``, which
    sends its ORM calls back to the DB thread. Awaited from async code (a
    subclass's ``await super().setUpTestData()``), it is the coroutine itself.
    """

    def __init__(self, func: Callable[..., Coroutine[Any, Any, None]]) -> None:
        self.func = func

    def __get__(self, instance: object, owner: type) -> Callable[..., Any]:
        func = self.func

        @functools.wraps(func)
        def setUpTestData(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if loop_running():
                return func(owner, *args, **kwargs)
            loop = class_loop(owner)
            if loop is None or not _IN_CLASS_HOOK.get():
                return async_to_sync(func)(owner, *args, **kwargs)
            # M, setting the class up in place: on its loop, in a copy of the
            # context, whose changes come back as async_to_sync brings them.
            context = contextvars.copy_context()
            try:
                return loop.loop.run(func(owner, *args, **kwargs), context)
            finally:
                adopt(context)

        return setUpTestData


def make_async_set_up_test_data_callable(cls: type) -> None:
    attr = cls.__dict__.get("setUpTestData")
    if attr is not None and not isinstance(attr, classmethod | _AsyncSetUpTestData):
        msg = (
            f"{cls.__module__}.{cls.__qualname__}.setUpTestData must be a classmethod: "
            f"Django calls it once for the class. Add @classmethod above it, and name its "
            f"first argument cls."
        )
        raise TypeError(msg)
    func = getattr(attr, "__func__", attr)
    if isinstance(attr, classmethod) and inspect.iscoroutinefunction(func):
        cls.setUpTestData = _AsyncSetUpTestData(func)  # type: ignore[attr-defined]
