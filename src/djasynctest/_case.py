"""AsyncTestMixin: Django's test cases on IsolatedAsyncioTestCase.

How a test runs (M = the test's thread, which runs its event loop and its sync
code, as in Django; D = the process's DB thread, which runs the database work
of async code):

1. One set of connection objects, D's, holds the class's and the test's
   transactions. M borrows them (``_dbthread.lend_connections``) for the class
   and each test, and the two threads take turns: before sync code touches
   them, M waits for D to be idle (a query a cancelled task left running).
2. ``setUpClass`` / ``tearDownClass`` / ``doClassCleanups`` (Django's and the
   user's) and ``async def setUpTestData``: see ``_classlevel``.
3. Django's per-test ``_pre_setup`` (client, mail outbox, per-test atomics)
   runs in ``_callSetUp``, which registers ``_post_teardown`` (rollback) as
   the first cleanup, so that it runs after every other one.
4. Each hook, the test and each cleanup runs where it belongs, in the test's
   ``contextvars.Context`` (a copy of the class's): coroutine functions on the
   loop, plain functions on M, outside the loop. An async hook that a sync
   wrapper calls runs on the loop too (see ``_wrappers``).
5. Before the first hook, the test's context enters the routing context (see
   ``_routing``): thread-sensitive ``sync_to_async`` calls, which is all of
   Django's async ORM and request handling, go to D.
6. With a ``timeout``, sync code runs on D instead (M waits for it with the
   deadline, and gives D up if it never returns); D then sets the next test
   of the class up right after each rollback (``queue_next_pre_setup``).
7. ``_tearDownAsyncioRunner`` (M) finishes a teardown that an exception
   skipped (``debug()``), exits the routing context, and closes the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import types
import unittest
import warnings
from collections.abc import Callable, Collection, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar, cast

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import SimpleTestCase, TestCase, TransactionTestCase
from django.test.utils import CaptureQueriesContext

from djasynctest._asyncbackend import (
    CapturedCallbacks,
    close_opened,
    uses_async_backend,
    watch_opened,
)
from djasynctest._classlevel import (
    CLASS_HOOKS,
    check_bases,
    check_class_transaction,
    class_context,
    class_loop,
    class_options,
    default_hook,
    lends_connections,
    make_async_set_up_test_data_callable,
    queue_next_pre_setup,
    raise_if_class_transaction_lost,
    run_class_hook_on_db_thread,
    take_next_pre_setup,
)
from djasynctest._conf import (
    INHERITED,
    BlockingMode,
    LoopScope,
    Options,
    check_class,
)
from djasynctest._dbthread import db_thread, outcome
from djasynctest._dbtools import (
    AsyncModifySettings,
    AsyncOverrideSettings,
    OnDBThread,
    SyncClient,
    call_inside,
    loop_running,
)
from djasynctest._diagnostics import stop_db_thread_on_interrupt, warn_at_test
from djasynctest._loop import Loop, Run, loop_for
from djasynctest._routing import enter_routing, exit_routing, run_in
from djasynctest._testrun import TestRun, awaited
from djasynctest._wrappers import reach_through_sync_wrappers

__unittest = True

T = TypeVar("T")


class AsyncTestMixin(unittest.IsolatedAsyncioTestCase):
    """Run a Django test case on IsolatedAsyncioTestCase, its database work on one thread.

    Put it first in the bases: ``class T(AsyncTestMixin, django.test.TestCase)``.
    """

    #: Called with no arguments to make the event loop (e.g. ``uvloop.new_event_loop``);
    #: ``None`` (default): asyncio's.
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = INHERITED
    #: ``"test"`` (default): a new event loop for each test; ``"class"``: one for the whole
    #: class; ``"module"``: one for every class of the test module; ``"session"``: one for the
    #: whole run. With any but ``"test"``, :meth:`asyncSetUpClass` and
    #: :meth:`asyncTearDownClass` run on it too.
    loop_scope: ClassVar[LoopScope] = INHERITED
    #: Run the loop in asyncio's debug mode (slow; ``IsolatedAsyncioTestCase``'s default).
    loop_debug: ClassVar[bool] = INHERITED
    #: Seconds a callback may hold the event loop before it is reported (default 0.1);
    #: ``None`` turns the blocking detector off.
    blocking_threshold: ClassVar[float | None] = INHERITED
    #: ``"fail"`` (default): a blocked loop fails the test; ``"warn"``: a :class:`BlockingWarning`.
    blocking_mode: ClassVar[BlockingMode] = INHERITED
    #: Seconds each test (its hooks and cleanups included) may run before it fails with the
    #: stack of every pending task and of the DB thread, whose running queries are
    #: interrupted so that the test is still rolled back; ``setUpClass``,
    #: ``asyncSetUpClass`` and ``asyncTearDownClass`` get as long each. ``None``
    #: (default): no limit.
    timeout: ClassVar[float | None] = INHERITED
    #: Dotted names of modules, packages or functions whose blocking calls are not reported
    #: (``["myapp.legacy", "myapp.pdf.render"]``).
    blocking_allowed: ClassVar[Sequence[str]] = INHERITED
    #: Record the whole stack where each task is created, to show it when a test leaves one
    #: pending (slow; by default the report shows the file and line that made it).
    task_creation_stacks: ClassVar[bool] = INHERITED
    #: The leaks reported when a test ends: some of ``"tasks"``, ``"threads"`` and
    #: ``"connections"`` (default: all three).
    leak_checks: ClassVar[Collection[str]] = INHERITED
    #: While the class runs, keep the test's thread and the DB thread on one CPU, where
    #: handing work between them is cheapest (default ``True``; Linux; parallel workers
    #: each take a different CPU).
    cpu_affinity: ClassVar[bool] = INHERITED

    _asyncioRunner: asyncio.Runner | None
    _asyncioTestContext: contextvars.Context
    _djat_options: Options
    _djat_test: TestRun | None

    _djat_pre_setup: Future[None] | None
    _djat_routing: ThreadSensitiveContext | None
    _djat_teardown_due: bool
    _djat_started: bool

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_bases(cls, AsyncTestMixin)
        check_class(cls)
        for name in CLASS_HOOKS:
            run_class_hook_on_db_thread(cls, name)
        make_async_set_up_test_data_callable(cls)
        reach_through_sync_wrappers(cls)

    def __init__(self, methodName: str = "runTest") -> None:
        super().__init__(methodName)
        self._djat_reset()

    def _djat_reset(self) -> None:
        self._djat_all_sync: bool | None = None
        self._djat_pre_setup = None
        self._djat_set_up_in_place = False
        self._djat_routing = None
        self._djat_teardown_due = False
        self._djat_started = False
        test = getattr(self, "_djat_test", None)
        self._djat_test = None
        if test is not None:
            test.close()

    # --- Entry points -------------------------------------------------------

    def __call__(self, result: unittest.TestResult | None = None) -> Any:
        # Django's __call__ wraps async tests in async_to_sync and runs
        # _pre_setup on the calling thread; run() does both our way.
        return self.run(result)

    def run(self, result: unittest.TestResult | None = None) -> unittest.TestResult | None:
        try:
            return _off_db_thread(super().run, result)
        except KeyboardInterrupt:
            stop_db_thread_on_interrupt()
            raise

    def _djat_options_now(self) -> Options:
        return class_options(type(self))

    def _djat_is_all_sync(self) -> bool:
        """Whether the test method and its per-test hooks are all plain functions (the
        hooks' answer is kept for the class)."""
        if self._djat_all_sync is None:
            cls = type(self)
            hooks_sync: bool | None = cls.__dict__.get("_djat_hooks_sync")
            if hooks_sync is None:
                hooks_sync = _hooks_sync(self)
                cls._djat_hooks_sync = hooks_sync  # type: ignore[attr-defined]
            self._djat_all_sync = hooks_sync and not _is_async(getattr(self, self._testMethodName))
        return self._djat_all_sync

    def debug(self) -> None:
        _off_db_thread(self._djat_debug)

    def _djat_debug(self) -> None:
        # IsolatedAsyncioTestCase.debug would reach Django's debug() through
        # super(); go to unittest's directly, with the loop around it.
        self._setupAsyncioRunner()
        try:
            unittest.TestCase.debug(self)
        finally:
            self._tearDownAsyncioRunner()

    # --- Class level (runs on the DB thread, see __init_subclass__) ---------

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()

    @classmethod
    def doClassCleanups(cls) -> None:
        super().doClassCleanups()

    @classmethod
    @default_hook
    async def asyncSetUpClass(cls) -> None:
        """Runs once per class, on the class's loop, after ``setUpClass`` (and so after
        fixtures and ``setUpTestData``), in the class's context and transaction.

        It needs a loop that outlives a test: any ``loop_scope`` but ``"test"`` (the
        class's, the module's or the session's loop). A class with a loop per test that
        defines it fails at ``setUpClass`` with a ``TypeError`` that says so."""

    @classmethod
    @default_hook
    async def asyncTearDownClass(cls) -> None:
        """Runs once per class, on the class's loop, before ``tearDownClass``; like
        :meth:`asyncSetUpClass`, with any ``loop_scope`` but ``"test"``."""

    # --- Per test -----------------------------------------------------------

    def _setupAsyncioRunner(self) -> None:
        # M.
        assert self._asyncioRunner is None, "asyncio runner is already initialized"
        cls = type(self)
        opts = self._djat_options = self._djat_options_now()
        db = db_thread()
        # Sync code (Django's per-test set-up and rollback, sync hooks and tests) runs
        # here, where Django runs it, on the connection objects of D, which hold the
        # class's transaction: the two threads take turns (see _testrun). With a
        # timeout, it runs on D, which M can then give up on.
        test = self._djat_test = TestRun(
            in_place=opts.timeout is None and not db.stopped,
            db=db,
            coroutine=self._djat_run_coroutine,
        )
        if test.in_place and not lends_connections(cls):
            test.lend_for_the_run(db)  # a test run outside its class's set-up
        test.run = Run(None, opts, str(self), warn=functools.partial(warn_at_test, self))
        if not _is_skipped(self):
            pending = take_next_pre_setup(cls)
            if pending is None and test.in_place:
                self._djat_set_up_in_place = True  # in _callSetUp
            elif pending is None:
                try:
                    pending = db_thread().submit(self._djat_run_pre_setup)
                except RuntimeError as exc:
                    # The DB thread stopped: unittest reports it as the test's
                    # error when _callSetUp reads it (here, it would end the run).
                    pending = Future()
                    pending.set_exception(exc)
            self._djat_pre_setup = pending
        context = class_context(cls)
        if context is not None:
            # What the class's hooks set, for this test alone.
            self._asyncioTestContext = context.copy()
        self._djat_started = True
        if not self._djat_is_all_sync():
            # Its loop, made now (with a loop per test) while D works. A test whose code
            # is all sync gets one only if async code turns up, and no watch on it.
            self._djat_use(self._djat_test_loop())

    def _djat_test_loop(self) -> Loop:
        """M: the loop the test runs on: its class's, its module's or the session's (by
        its ``loop_scope``), or a loop of its own (also for a test run outside its class's
        set-up, which shares no class loop)."""
        cls, opts = type(self), self._djat_options
        loop = class_loop(cls)
        if loop is not None:
            return loop.loop
        scope = opts.loop_scope if opts.loop_scope in ("module", "session") else "test"
        return loop_for(
            scope, cls.__module__, debug=opts.loop_debug, loop_factory=opts.loop_factory
        )

    def _djat_use(self, loop: Loop) -> None:
        # M.
        self._asyncioRunner = loop.runner
        self._djat_run.attach(loop)

    @property
    def _djat_run(self) -> Run:
        test = self._djat_test
        assert test is not None, "the test is not set up"
        assert test.run is not None
        return test.run

    def _djat_run_pre_setup(self) -> None:
        # D.
        cls = type(self)
        raise_if_class_transaction_lost(cls)
        if cls._pre_setup_ran_eagerly:  # type: ignore[attr-defined]
            cls._pre_setup_ran_eagerly = False  # type: ignore[attr-defined]
        else:
            self._pre_setup()  # type: ignore[attr-defined]

    def _djat_post_teardown(self) -> None:
        # M in place, or D, as the last cleanup.
        self._djat_teardown_due = False
        try:
            self._post_teardown()  # type: ignore[attr-defined]
        finally:
            check_class_transaction(self)
        if not (self._djat_test is not None and self._djat_test.in_place):
            queue_next_pre_setup(self)

    def _djat_left_behind(self) -> bool:
        """M: whether the DB thread was abandoned to this test's stuck sync code.

        That code still runs in the test's context, which no other thread can
        then enter: what is left of the test (its tear-down hooks, whose database
        work now fails with the cause) runs in a copy of it.
        """
        db = db_thread()
        if not (db.stopped and db.abandoned_by == str(self)):
            return False
        if self._djat_routing is not None:
            self._djat_routing = None  # exited with the context it was entered in, if ever
            self._asyncioTestContext = self._asyncioTestContext.copy()
        return True

    def _djat_roll_back(self) -> None:
        # M. No timeout may cut the rollback short; but after a timeout, the DB
        # thread may be stuck in the test's sync code, and is then abandoned
        # (which ends the transactions from outside).
        db, test = db_thread(), self._djat_test
        assert test is not None
        deadline = test.deadline
        if test.in_place:
            db.idle()
            run_in(self._asyncioTestContext, self._djat_post_teardown)
            return
        if db.is_current():
            run_in(self._asyncioTestContext, self._djat_post_teardown)
            return
        if db.abandoned_by != str(self):
            job = db.submit(run_in, self._asyncioTestContext, self._djat_post_teardown)
            if deadline is not None and deadline.report is not None:
                deadline.settle(job)
            if db.abandoned_by != str(self):
                outcome(job)
                return
        self._djat_teardown_due = False

    def _callSetUp(self) -> None:
        # M.
        pending, self._djat_pre_setup = self._djat_pre_setup, None
        in_place, self._djat_set_up_in_place = self._djat_set_up_in_place, False
        if pending is not None or in_place:
            if pending is not None:
                _finish(pending)
            else:
                db_thread().idle()
                self._djat_run_pre_setup()
            self._djat_teardown_due = True
            self.addCleanup(self._djat_post_teardown)
        if not (self._djat_is_all_sync() and class_context(type(self)) is not None):
            # A test that runs async code routes its own context, and exits it when
            # it ends: a task it left behind cannot write into the next test. A sync
            # test's context is a copy of its class's, which is routed already.
            self._djat_routing = self._asyncioTestContext.run(enter_routing, db_thread())
        if uses_async_backend():
            # Before the leak check and the rollback or flush.
            opened, _ = self._asyncioTestContext.run(watch_opened)
            self.addCleanup(self._djat_close_async_backend, opened)
        self._djat_before_hooks()
        if _overrides(self, "setUp", unittest.TestCase):
            self._djat_call(self.setUp)
        if _overrides(self, "asyncSetUp", unittest.IsolatedAsyncioTestCase):
            self._djat_call(self.asyncSetUp)

    def _djat_before_hooks(self) -> None:
        """M, in the test's context and transaction, before ``setUp``: for subclasses."""

    @classmethod
    @default_hook
    async def _djat_class_started(cls) -> None:
        """With any ``loop_scope`` but ``"test"``: runs on the class's loop before
        ``asyncSetUpClass``."""

    @classmethod
    @default_hook
    async def _djat_class_ending(cls) -> None:
        """With any ``loop_scope`` but ``"test"``: runs on the class's loop after
        ``asyncTearDownClass``."""

    def _callTestMethod(self, method: Callable[[], Any]) -> None:
        if self._djat_call(method) is not None:
            warnings.warn(
                f"It is deprecated to return a value that is not None from a test case ({method})",
                DeprecationWarning,
                stacklevel=4,
            )

    def _callTearDown(self) -> None:
        if _overrides(self, "asyncTearDown", unittest.IsolatedAsyncioTestCase):
            self._djat_call(self.asyncTearDown)
        if _overrides(self, "tearDown", unittest.TestCase):
            self._djat_call(self.tearDown)

    def _callCleanup(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        if function == self._djat_close_async_backend:
            function(*args)
        elif function == self._djat_post_teardown:
            try:
                self._djat_check_leaks()  # first: it looks at the loop and the threads
            finally:
                self._djat_roll_back()
        else:
            self._djat_call(function, *args, **kwargs)

    def _tearDownAsyncioRunner(self) -> None:
        # M.
        if not self._djat_started:
            return
        try:
            pending, self._djat_pre_setup = self._djat_pre_setup, None
            if pending is not None:
                # run() ended before setUp (e.g. an error from the result
                # object): undo the per-test setup all the same.
                outcome(pending)
                self._djat_teardown_due = True
                self.addCleanup(self._djat_post_teardown)
            if self._djat_teardown_due:
                # debug() stops at the first exception and skips cleanups;
                # the rollback must happen anyway.
                self.doCleanups()
            if not self._djat_left_behind() and self._djat_routing is not None:
                self._asyncioTestContext.run(exit_routing, self._djat_routing)
        finally:
            test = self._djat_test
            loop = None if test is None or test.run is None else test.run.loop
            self._djat_reset()  # gives D's connection objects back
            self._asyncioRunner = None
            if loop is not None and loop.scope == "test":
                loop.close()

    def __del__(self) -> None:
        # IsolatedAsyncioTestCase closes a runner left behind; ours never is.
        pass

    # --- Dispatch -----------------------------------------------------------

    def _djat_call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a hook, test or cleanup: coroutines on the loop, the rest here (on D's
        connection objects, once D is idle) or, with a timeout, on D."""
        __tracebackhide__ = True
        self._djat_left_behind()
        if _is_async(func):
            return self._djat_run_coroutine(func(*args, **kwargs))
        test = self._djat_test
        assert test is not None, "the test is not set up"
        result = test.sync_in(self._asyncioTestContext, func, *args, **kwargs)
        if inspect.isawaitable(result):
            # A sync wrapper that returns the coroutine of an async function.
            return self._djat_run_coroutine(awaited(result))
        return result

    def _djat_run_coroutine(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context | None = None
    ) -> Any:
        # M: runs the loop until coro is done, watched by the diagnostics.
        __tracebackhide__ = True
        db = db_thread()
        if db.is_current():
            # A test run on D whole (_djat_run_on_db_thread): M waits for it, and
            # runs this for it.
            return db.ask_caller(functools.partial(self._djat_run_coroutine, coro, context))
        run = self._djat_run
        if run.loop is None:
            self._djat_use(self._djat_test_loop())
        return run.run(coro, context or self._asyncioTestContext)

    def _djat_close_async_backend(self, opened: list[Any]) -> None:
        # Here (M, or D for a test run there whole), not in the test's context: the
        # django-async-backend wrappers that connected in the test, closed on its loop.
        if opened:
            self._djat_run_coroutine(close_opened(opened))

    def _djat_check_leaks(self) -> None:
        # M (or D), with the loop stopped, after the user's cleanups and before the rollback.
        if self._djat_test is not None and self._djat_test.run is not None:
            self._djat_test.run.check_leaks()

    # --- Django's tools, on the DB thread's connections ---------------------

    def assertNumQueries(
        self,
        num: int,
        func: Callable[..., Any] | None = None,
        *args: Any,
        using: str = DEFAULT_DB_ALIAS,
        **kwargs: Any,
    ) -> Any:
        """Django's ``assertNumQueries``, counting the queries of the DB thread.

        Works as ``with``, as ``async with``, and with a sync or async ``func``
        (then await the result).
        """
        make = functools.partial(super().assertNumQueries, num, using=using)  # type: ignore[misc]
        context = OnDBThread(db_thread(), make)
        if func is None:
            return context
        return call_inside(context, func, *args, **kwargs)

    @classmethod
    def captureOnCommitCallbacks(
        cls, *, using: str = DEFAULT_DB_ALIAS, execute: bool = False
    ) -> OnDBThread[list[Callable[[], Any]]]:
        """Django's ``captureOnCommitCallbacks``, for ``with`` and ``async with``.

        It captures the callbacks registered on the DB thread's connection, and
        runs them there when ``execute=True``.
        """
        make = functools.partial(
            super().captureOnCommitCallbacks,  # type: ignore[misc]
            using=using,
            execute=execute,
        )
        if uses_async_backend():
            # And those of django-async-backend's connection (see _asyncbackend).
            return CapturedCallbacks(db_thread(), make, using, execute)
        return OnDBThread(db_thread(), make)

    def captureQueries(self, *, using: str = DEFAULT_DB_ALIAS) -> OnDBThread[CaptureQueriesContext]:
        """Django's ``CaptureQueriesContext``, on the DB thread's connection.

        For ``with`` and ``async with``; afterwards, ``captured_queries`` lists the
        queries the test's code ran in the block, wherever it ran them.
        """
        return OnDBThread(db_thread(), lambda: CaptureQueriesContext(connections[using]))

    def settings(self, **kwargs: Any) -> AsyncOverrideSettings:
        """Django's ``self.settings(...)``, also usable as ``async with``."""
        return AsyncOverrideSettings(**kwargs)

    def modify_settings(self, **kwargs: Any) -> AsyncModifySettings:
        """Django's ``self.modify_settings(...)``, also usable as ``async with``."""
        return AsyncModifySettings(**kwargs)

    def assertQuerySetEqual(self, *args: Any, **kwargs: Any) -> None:
        """Django's ``assertQuerySetEqual``; from async code, querysets run on the DB thread."""
        check = functools.partial(super().assertQuerySetEqual, *args, **kwargs)  # type: ignore[misc]
        if loop_running():
            db_thread().call(check)
        else:
            check()

    def assertRedirects(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """Django's ``assertRedirects``, also for ``AsyncClient`` responses."""
        check = functools.partial(super().assertRedirects, response, *args, **kwargs)  # type: ignore[misc]
        client = getattr(response, "client", None)
        if client is None or not inspect.iscoroutinefunction(client.get):
            check()
            return None

        def check_with_sync_client() -> None:
            # D: Django fetches the target through response.client.get().
            response.client = SyncClient(client)
            try:
                check()
            finally:
                response.client = client

        return db_thread().call(check_with_sync_client)

    # --- Pickling (parallel runners send test instances to workers) ---------

    def __getstate__(self) -> dict[str, Any]:
        # Django's SimpleTestCase.__getstate__ (which may be the live __dict__).
        state: dict[str, Any] = dict(cast("dict[str, Any]", super().__getstate__()))
        for name in (
            "_asyncioTestContext",
            "_asyncioRunner",
            "_djat_pre_setup",
            "_djat_routing",
            "_djat_test",
        ):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._asyncioRunner = None
        self._asyncioTestContext = contextvars.copy_context()
        self._djat_reset()


def _off_db_thread(func: Callable[..., T], /, *args: Any) -> T:
    """Run a test (``func``) on this thread, or, on the DB thread, on a thread of its own.

    A test run from inside a sync test (as Django's own suite does) starts on
    the DB thread, where its event loop would block the database work it sends
    there. It gets its own thread, while the DB thread serves that work.
    """
    db = db_thread()
    if not db.is_current():
        return func(*args)
    ran: Future[T] = Future()

    def run_test() -> None:
        try:
            ran.set_result(func(*args))
        except BaseException as exc:
            ran.set_exception(exc)

    threading.Thread(target=run_test, name="djasynctest-nested-test", daemon=True).start()
    db.serve_until(ran)
    return outcome(ran)


def _finish(job: Future[Any]) -> None:
    """Wait for a DB thread job, also from the DB thread (running the queue meanwhile)."""
    __tracebackhide__ = True
    db = db_thread()
    if db.is_current() and not job.done():
        db.serve_until(job)
    outcome(job)


def _is_skipped(case: unittest.TestCase) -> bool:
    method = getattr(case, case._testMethodName)
    return bool(
        getattr(type(case), "__unittest_skip__", False)
        or getattr(method, "__unittest_skip__", False)
    )


def _is_async(func: Any) -> bool:
    """asgiref's ``iscoroutinefunction``, quick for a plain function or method (most
    tests and hooks; asked for each): one with attributes of its own (a marker, a
    wrapper's ``__wrapped__``) takes asgiref's way."""
    plain = getattr(func, "__func__", func)
    if type(plain) is types.FunctionType and not plain.__dict__:
        return bool(plain.__code__.co_flags & inspect.CO_COROUTINE)
    return iscoroutinefunction(func)


def _hooks_sync(case: unittest.TestCase) -> bool:
    """Whether the per-test hooks of the test's class are all plain functions."""
    return not (
        iscoroutinefunction(case.setUp)
        or iscoroutinefunction(case.tearDown)
        or _overrides(case, "asyncSetUp", unittest.IsolatedAsyncioTestCase)
        or _overrides(case, "asyncTearDown", unittest.IsolatedAsyncioTestCase)
    )


def _overrides(case: unittest.TestCase, name: str, base: type) -> bool:
    """Whether ``name`` does anything: skipping the no-op defaults saves a thread hop each."""
    return getattr(type(case), name) is not getattr(base, name)


for _name in CLASS_HOOKS:
    run_class_hook_on_db_thread(AsyncTestMixin, _name)


# Nested as Django's are (TestCase is a TransactionTestCase is a SimpleTestCase), so
# that code which checks the hierarchy by name (pytest-django, override_settings,
# a suite with django.test's names swapped for these) sees the same. The mixin
# comes before every Django class in each MRO.


class AsyncSimpleTestCase(AsyncTestMixin, SimpleTestCase):
    """``django.test.SimpleTestCase`` with async tests and hooks: no database."""


class AsyncTransactionTestCase(AsyncSimpleTestCase, TransactionTestCase):
    """``django.test.TransactionTestCase`` with async tests and hooks."""


class AsyncTestCase(AsyncTransactionTestCase, TestCase):
    """``django.test.TestCase`` with async tests and hooks, each test rolled back."""
