"""Canaries: the private names of unittest, Django and asgiref that the library relies on.

Each test fails loudly when a new version changes one of them. When one fails,
read the new version's code at that place, adapt the module named in the
docstring, and update the canary.
"""

from __future__ import annotations

import contextvars
import importlib.util
import inspect
import unittest

import django.test
import pytest
from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext
from django.db import transaction


def source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_unittest_run_calls_the_hooks_we_override() -> None:
    """_case.AsyncTestMixin overrides _callSetUp, _callTestMethod, _callTearDown, _callCleanup."""
    run = source(unittest.TestCase.run)
    for call in ("self._callSetUp()", "self._callTestMethod(", "self._callTearDown()"):
        assert call in run
    assert "self._callCleanup(" in source(unittest.TestCase.doCleanups)
    debug = source(unittest.TestCase.debug)
    for call in ("self._callSetUp()", "self._callTestMethod(", "self._callCleanup("):
        assert call in debug


def test_isolated_asyncio_test_case_runner_hooks() -> None:
    """_case.AsyncTestMixin replaces the runner set-up and tear-down, and uses the test context."""
    case = unittest.IsolatedAsyncioTestCase
    assert "self._setupAsyncioRunner()" in source(case.run)
    assert "self._tearDownAsyncioRunner()" in source(case.run)
    init = source(case.__init__)
    assert "self._asyncioRunner = None" in init
    assert "self._asyncioTestContext = contextvars.copy_context()" in init


def test_django_call_wraps_async_tests_and_runs_pre_setup() -> None:
    """_case.AsyncTestMixin.__call__/debug bypass _setup_and_call and redo its per-test work."""
    assert "self._setup_and_call(" in source(django.test.SimpleTestCase.__call__)
    body = source(django.test.SimpleTestCase._setup_and_call)
    assert "async_to_sync(testMethod)" in body
    assert "_pre_setup_ran_eagerly" in body
    assert "self._pre_setup()" in body
    assert "self._post_teardown()" in body


def test_django_set_up_class_calls_set_up_test_data() -> None:
    """_classlevel._AsyncSetUpTestData is what Django's TestCase.setUpClass calls."""
    assert "cls.setUpTestData()" in source(django.test.TestCase.setUpClass)
    assert "cls.setUpTestData()" in source(django.test.TestCase._fixture_setup)


def test_django_getstate_returns_instance_state() -> None:
    """_case.AsyncTestMixin.__getstate__ drops the unpicklable context from Django's state."""
    assert "state = super().__dict__" in source(django.test.SimpleTestCase.__getstate__)


def test_asgiref_remembers_the_calling_loop_in_a_thread_local() -> None:
    """_routing.forget_event_loop clears what AsyncToSync reads here."""
    assert 'SyncToAsync.threadlocal, "main_event_loop"' in source(AsyncToSync.__call__)
    assert "self.threadlocal.main_event_loop = loop" in source(SyncToAsync.thread_handler)


def test_asgiref_thread_sensitive_context_takes_an_executor() -> None:
    """_routing.routing_context: the public route to the DB thread (asgiref 3.13+)."""
    assert "executor" in inspect.signature(ThreadSensitiveContext).parameters


def test_django_reads_serialized_contents_from_the_connection() -> None:
    """_classlevel._with_serialized_contents copies this attribute to the DB thread."""
    assert '"_test_serialized_contents"' in source(django.test.TransactionTestCase._fixture_setup)
    from django.db.backends.base.creation import BaseDatabaseCreation

    assert "self.connection._test_serialized_contents = " in source(
        BaseDatabaseCreation.create_test_db
    )


def test_asgiref_single_thread_executor_keeps_its_threads() -> None:
    """_routing.process_wide_threads: not reported as threads a test left behind."""
    from concurrent.futures import ThreadPoolExecutor

    assert isinstance(SyncToAsync.single_thread_executor, ThreadPoolExecutor)
    assert "self._threads = set()" in source(ThreadPoolExecutor.__init__)


def test_asgiref_executor_context_enters_and_exits_without_suspending() -> None:
    """_routing.enter_routing / exit_routing drive these coroutines without a loop."""
    from concurrent.futures import ThreadPoolExecutor

    from djasynctest._routing import enter_routing, exit_routing

    with ThreadPoolExecutor(max_workers=1) as executor:
        routing = enter_routing(executor)
        assert SyncToAsync.thread_sensitive_context.get() is routing
        exit_routing(routing)
        assert SyncToAsync.thread_sensitive_context.get(None) is None


def test_django_class_atomics_and_atomic_blocks() -> None:
    """_classlevel.undo_class_set_up finds Django's open class atomics this way."""
    assert "cls.cls_atomics = cls._enter_atomics()" in source(django.test.TestCase.setUpClass)
    assert "connection.atomic_blocks.append(self)" in source(transaction.Atomic.__enter__)
    assert "connection.atomic_blocks.pop()" in source(transaction.Atomic.__exit__)


def test_django_class_cleanup_of_database_failures() -> None:
    """_classlevel drops this class cleanup of Django's when the DB thread has stopped."""
    assert "cls.addClassCleanup(cls._remove_databases_failures)" in source(
        django.test.SimpleTestCase.setUpClass
    )
    assert "cls._class_cleanups.append((function, args, kwargs))" in source(
        unittest.TestCase.addClassCleanup
    )


def test_uvicorn_protocols_as_the_live_server_makes_them() -> None:
    """_live.LiveServer builds uvicorn's protocols as uvicorn.Server.startup() does."""
    import uvicorn.server
    from uvicorn.protocols.http.h11_impl import H11Protocol

    startup = source(uvicorn.server.Server.startup)
    assert "return config.http_protocol_class(" in startup
    for argument in ("config=config,", "server_state=self.server_state,", "_loop=_loop,"):
        assert argument in startup
    assert "app_state=self.lifespan.state," in startup
    state = uvicorn.server.ServerState()
    assert state.connections == set()
    assert state.tasks == set()
    assert "def shutdown(self)" in source(H11Protocol)
    assert "self.transport = transport" in source(H11Protocol.connection_made)


def test_django_keeps_its_postgresql_connection_pools_by_alias() -> None:
    """_diagnostics.new_threads leaves out the threads of the pools it keeps there."""
    pytest.importorskip("psycopg")
    from django.db.backends.postgresql.base import DatabaseWrapper

    assert isinstance(DatabaseWrapper._connection_pools, dict)
    pool = source(DatabaseWrapper.pool.fget)
    assert "self._connection_pools.setdefault(self.alias, pool)" in pool
    # psycopg_pool names each thread of a pool after the pool's name.
    if importlib.util.find_spec("psycopg_pool") is not None:
        import psycopg_pool

        assert 'name=f"{self.name}-worker-{i}"' in source(
            psycopg_pool.ConnectionPool._start_workers
        )


def test_asgiref_routes_thread_sensitive_calls_by_loop() -> None:
    """_routing.route_loop registers the DB thread for tasks of a context of their own."""
    assert isinstance(AsyncToSync.loop_thread_executors, dict)
    from djasynctest._routing import _stock_call

    body = source(_stock_call)
    assert "elif loop in AsyncToSync.loop_thread_executors:" in body
    assert "executor = AsyncToSync.loop_thread_executors[loop]" in body


def test_django_closes_obsolete_connections_through_one_method() -> None:
    """_dbtools.keep_test_transactions guards this method on the DB thread's connections."""
    import django.db

    assert "conn.close_if_unusable_or_obsolete()" in source(django.db.close_old_connections)
    assert "atomic._from_testcase = True" in source(django.test.TestCase._enter_atomics)


def test_asgiref_tags_local_values_with_their_thread() -> None:
    """_routing.claim_locals re-homes asgiref.local._Storage(thread_id, data) values.

    When asgiref changes how a Local's value is kept in a context, claim_locals
    must change with it: tests/test_context.py then fails too.
    """
    import threading

    from asgiref.local import Local, _Storage

    from djasynctest._routing import run_in

    local = Local()
    local.value = "set here"
    context = contextvars.copy_context()
    storages = [value for value in context.values() if type(value) is _Storage]
    assert storages, "a Local's value is no longer a _Storage in the context"
    assert {storage.thread_id for storage in storages} == {threading.get_ident()}
    seen: dict[str, object] = {}

    def read() -> None:
        seen["plain"] = context.run(getattr, local, "value", None)
        seen["claimed"] = run_in(context, getattr, local, "value", None)

    worker = threading.Thread(target=read)
    worker.start()
    worker.join()
    assert seen == {"plain": None, "claimed": "set here"}


def test_asgiref_call_as_the_lean_hop_mirrors_it() -> None:
    """_routing._lean_call does what SyncToAsync.__call__ and thread_handler do, for a
    thread-sensitive call that asgiref would send to the DB thread.

    When one of these lines changes, compare the new __call__ with _lean_call:
    the executor it picks, what it sets on the worker thread, how it handles
    cancellation and the context.
    """
    from djasynctest import _routing

    assert SyncToAsync.__call__ is _routing._lean_call
    call = source(_routing._stock_call)
    for line in (
        'current_thread_executor = getattr(AsyncToSync.executors, "current", None)',
        "elif self.thread_sensitive_context.get(None):",
        "if thread_sensitive_context._exited:",
        "executor = self.context_to_thread_executor[thread_sensitive_context]",
        "elif loop in AsyncToSync.loop_thread_executors:",
        "context = contextvars.copy_context() if self.context is None else self.context",
        "_restore_context(context)",
        "ret = await asyncio.shield(exec_coro)",
        "task = task_context[0]",
        "cancel_parent = False",
        "ret = await exec_coro",
    ):
        assert line in call, line
    handler = source(SyncToAsync.thread_handler)
    for line in (
        "self.threadlocal.main_event_loop = loop",
        "self.threadlocal.main_event_loop_pid = os.getpid()",
        "self.threadlocal.task_context = task_context",
        "raise exc_info[1]",
    ):
        assert line in handler, line
    assert "task_context.append(current_task)" in source(AsyncToSync.main_wrap)


def test_asyncio_runner_run_as_run_on_mirrors_it() -> None:
    """_loop.run_on does what asyncio.Runner.run does, with a handler of its own for Ctrl-C.

    When one of these lines changes, compare the new Runner.run with run_on.
    """
    import asyncio

    run = source(asyncio.Runner.run)
    for line in (
        "task = self._loop.create_task(coro, context=context)",
        "and signal.getsignal(signal.SIGINT) is signal.default_int_handler",
        "sigint_handler = functools.partial(self._on_sigint, main_task=task)",
        "self._interrupt_count = 0",
        "return self._loop.run_until_complete(task)",
        'uncancel = getattr(task, "uncancel", None)',
        "signal.signal(signal.SIGINT, signal.default_int_handler)",
    ):
        assert line in run, line
    assert "def _on_sigint(self, signum, frame, main_task):" in source(asyncio.Runner)
    # run_on calls the functions that the signal module wraps (with enum conversions).
    import _signal
    import signal

    assert "_signal.signal(" in source(signal.signal)
    assert "_signal.getsignal(" in source(signal.getsignal)
    assert _signal.default_int_handler is signal.default_int_handler


def test_pytest_django_chooses_its_test_case_as_the_plugin_reads_it() -> None:
    """_plugin_django.is_transactional reads pytest-django's choice of TestCase or
    TransactionTestCase for a test the way _django_db_helper makes it; a TestCase's
    class-level set-up (which would close the connections) is skipped, so that the test's
    transaction nests in the scoped fixtures' (_plugin_scopes)."""
    import pytest
    from pytest_django import fixtures

    helper = source(fixtures._django_db_helper.__wrapped__)  # type: ignore[attr-defined]
    for line in (
        ") = validate_django_db(marker)",
        '("transactional_db" in request.fixturenames or "live_server" in request.fixturenames)',
        '("django_db_reset_sequences" in request.fixturenames)',
        "test_case_class = django.test.TransactionTestCase",
    ):
        assert line in helper, line
    marker = pytest.mark.django_db(databases=["default"]).mark
    assert fixtures.validate_django_db(marker) == (False, False, ["default"], False, None)
    assert "super(django.test.TestCase, cls).tearDownClass()" in helper


def test_pytest_django_sets_up_the_databases_its_tests_use() -> None:
    """_plugin_django.databases_set_up: the scoped fixtures' transactions are on the
    databases that django_db_setup makes, as _get_databases_for_setup computes them."""
    from pytest_django import fixtures

    assert "_get_databases_for_setup(request.session.items)" in source(
        fixtures.django_db_setup.__wrapped__  # type: ignore[attr-defined]
    )
    assert fixtures._get_databases_for_setup([]) == (set(), set())


def test_pytest_fixture_definitions_as_the_scopes_use_them() -> None:
    """_plugin_scopes tears scoped fixtures down early, as pytest does when a parameter
    changes (FixtureDef.finish, which also forgets a refused fixture's error), and rolls a
    fixture's transaction back in pytest_fixture_post_finalizer, which runs after its
    teardown."""
    from _pytest import fixtures

    execute = source(fixtures.FixtureDef.execute)
    assert "self.finish(request)" in execute
    assert "pytest_fixture_post_finalizer(" in execute
    assert "self.cached_result = None" in source(fixtures.FixtureDef.finish)
    assert list(inspect.signature(fixtures.FixtureDef.finish).parameters) == ["self", "request"]


def test_threading_exit_hooks_run_before_concurrent_futures_joins_its_threads() -> None:
    """_loop.at_shutdown closes the shared loops in threading's exit hooks: before
    atexit's (where Python 3.12 starts no thread), and before concurrent.futures joins the
    threads of every executor (the loops' default executors are left to it, at exit).

    When this breaks, find another place that runs at exit before those threads are joined.
    """
    import concurrent.futures.thread
    import threading

    assert callable(threading._register_atexit)  # type: ignore[attr-defined]
    assert "threading._register_atexit(_python_exit)" in source(concurrent.futures.thread)
    # Newest first: concurrent.futures (imported by asyncio) registered before the loops.
    assert "for atexit_call in reversed(_threading_atexits):" in source(
        threading._shutdown  # type: ignore[attr-defined]
    )


def test_asyncio_runner_close_as_close_runner_mirrors_it() -> None:
    """_loop.close_runner does what asyncio.Runner.close does, and skips its runs of the
    loop where the loop has nothing to shut down.

    When one of these lines changes, compare the new Runner.close with close_runner.
    """
    import asyncio
    import asyncio.base_events

    close = source(asyncio.Runner.close)
    for line in (
        "if self._state is not _State.INITIALIZED:",
        "_cancel_all_tasks(loop)",
        "loop.run_until_complete(loop.shutdown_asyncgens())",
        "loop.shutdown_default_executor(",
        "if self._set_event_loop:",
        "events.set_event_loop(None)",
        "loop.close()",
        "self._loop = None",
        "self._state = _State.CLOSED",
    ):
        assert line in close, line
    loop = asyncio.base_events.BaseEventLoop
    assert "self._ready = collections.deque()" in source(loop.__init__)
    assert "self._scheduled = []" in source(loop.__init__)
    assert "if not len(self._asyncgens):" in source(loop.shutdown_asyncgens)
    assert "if self._default_executor is None:" in source(loop.shutdown_default_executor)
