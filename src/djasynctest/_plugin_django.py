"""pytest-django's internals, as the plugin touches them (nowhere else).

For an async-DB item, pytest-django's ``_django_db_helper`` (the per-test
``TestCase``, its transaction) runs on D's connection objects, its sync
function fixtures run as the test's sync code (``TestRun.sync``), and its
connection-bound tools (``django_assert_num_queries``,
``django_assert_max_num_queries``, ``django_capture_on_commit_callbacks``)
return context managers that are made, entered and exited on D.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import pytest

from djasynctest._affinity import pin_together
from djasynctest._asyncbackend import (
    CapturedCallbacks,
    close_opened,
    opened_on,
    unwatch_opened,
    uses_async_backend,
    watch_opened,
)
from djasynctest._asyncbackend import bridge as bridge_async_backend
from djasynctest._asyncbackend import unbridge as unbridge_async_backend
from djasynctest._dbthread import (
    DBThread,
    db_thread,
    lend_connections,
)
from djasynctest._dbtools import (
    ConnectionState,
    OnDBThread,
    connect_receivers,
    connection_state,
    give_connection_state,
)
from djasynctest._plugin_item import ItemRun, options_of
from djasynctest._routing import (
    enter_routing,
    exit_routing,
)

__unittest = True

T = TypeVar("T")


# Fixtures that stay on M: they do not touch the database, and some cannot move
# (monkeypatch, capsys); pytest_django.fixtures (client, settings...) moves.
STAY_ON_MAIN_THREAD = ("_pytest.", "pytest_asyncio.", "pytest_django.plugin", "djasynctest.pytest")


NUM_QUERIES = ("django_assert_num_queries", "django_assert_max_num_queries")


ON_COMMIT = "django_capture_on_commit_callbacks"


def database_on_db_thread(
    test: ItemRun, helper: Callable[..., Generator[None]], name: str, request: pytest.FixtureRequest
) -> Callable[..., Generator[None]]:
    """pytest-django's per-test database (``_django_db_helper``), on D's connection objects:
    here, where pytest runs it (with a timeout, on D)."""

    def database(**kwargs: Any) -> Generator[None]:
        __tracebackhide__ = True
        db = db_thread(replace_stopped=True)
        connect_receivers()
        request.getfixturevalue("_djasynctest_connections")
        # The test's thread and D on one CPU while they hand work to each other
        # (see _affinity), as for a test class; settings.DJASYNCTEST["CPU_AFFINITY"].
        if options_of(request.node).cpu_affinity:
            unpin = pin_together(db.thread.native_id)
            if unpin is not None:
                request.addfinalizer(unpin)
        steps = helper(**kwargs)
        # Undone in reverse, each step even when one before it fails.
        with contextlib.ExitStack() as undo:
            if test.in_place:
                state = connection_state()  # M's own
                undo.callback(lend_connections(db))
                db.idle()
                _first_database_step(steps, state)
            else:
                test.wait(db.submit(_first_database_step, steps, connection_state()))
            undo.callback(_last_database_step, test, db, steps, name)
            # As for a test class: the leaks, after the test's own teardown and before
            # the rollback (once; the test's loop fixture finds nothing left to say).
            undo.callback(_check_leaks, test)
            # M: from here on, thread-sensitive calls made in this context, and in
            # the copies that every fixture's and the test's coroutine runs in, go to D.
            undo.callback(exit_routing, enter_routing(db))
            bridged = _bridge_async_backend(request)
            if bridged is not None:
                undo.callback(unbridge_async_backend, bridged)
            elif uses_async_backend():
                test.opened, watch = watch_opened()
                undo.callback(close_async_backend, test)  # before the flush
                undo.callback(unwatch_opened, watch)
            test.db = db
            undo.callback(setattr, test, "db", None)
            yield

    return database


def _check_leaks(test: ItemRun) -> None:
    __tracebackhide__ = True
    if test.run is not None:
        test.run.check_leaks()


def _bridge_async_backend(request: pytest.FixtureRequest) -> Any:
    """M: for a test in a rolled-back transaction (pytest-django's ``db``), the aliases
    whose django-async-backend connections join it (see _asyncbackend); None otherwise."""
    if not uses_async_backend() or is_transactional(request.node):
        return None
    from django.db import connections

    databases = _marked(request.node)[2]
    if databases is None:
        return bridge_async_backend({"default"})
    return bridge_async_backend(set(connections) if databases == "__all__" else set(databases))


def is_transactional(item: pytest.Item) -> bool:
    """Whether pytest-django runs ``item`` as a ``TransactionTestCase`` (its own choice,
    as ``_django_db_helper`` makes it)."""
    transactional, reset_sequences, *_ = _marked(item)
    fixtures = getattr(item, "fixturenames", ())
    return bool(
        transactional
        or reset_sequences
        or not {"transactional_db", "live_server", "django_db_reset_sequences"}.isdisjoint(fixtures)
    )


def databases_set_up(items: list[pytest.Item]) -> set[str]:
    """The aliases of the test databases that pytest-django's ``django_db_setup`` makes
    for ``items``."""
    from pytest_django.fixtures import _get_databases_for_setup

    aliases, _ = _get_databases_for_setup(items)
    return aliases


def _marked(item: pytest.Item) -> tuple[Any, ...]:
    """pytest-django's reading of the item's ``django_db`` mark: (transaction,
    reset_sequences, databases, serialized_rollback, available_apps)."""
    from pytest_django.fixtures import validate_django_db

    marker = item.get_closest_marker("django_db")
    if marker is None:
        return False, False, None, False, None
    return tuple(validate_django_db(marker))


def close_async_backend(test: ItemRun, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """M: the django-async-backend connections that a transactional test opened (on
    ``loop``, or on any), closed as the test ends, each on the loop it connected on: the
    test's, or one of pytest-asyncio's (idle between its runs; a test's own is closed
    before the test's database, so its runner's teardown closes them first). Those whose
    loop is gone (``async_to_sync`` in a sync fixture) are closed on the test's loop, or
    on one made for it, as an AsyncTransactionTestCase closes them all on its loop."""
    __tracebackhide__ = True
    opened = test.opened
    if not opened:
        return
    run = test.run
    ours = None if run is None or run.loop is None else run.loop.loop
    for on in opened_on(opened) if loop is None else [loop]:
        if on is ours or (on.is_closed() and ours is not None):
            assert run is not None
            run.run(close_opened(opened, on), contextvars.copy_context())
        elif not on.is_closed():
            on.run_until_complete(close_opened(opened, on))
        else:
            with asyncio.Runner() as runner:
                runner.run(close_opened(opened, on))


def _last_database_step(test: ItemRun, db: DBThread, steps: Generator[None], name: str) -> None:
    __tracebackhide__ = True
    if test.in_place:
        try:
            db.idle()
        except BaseException:
            _close(steps)  # pytest-django's database blocker must still be restored
            raise
        _rest(steps, name)
        return
    try:
        test.wait(db.submit(_rest, steps, name))
    except BaseException:
        if db.stopped:
            # Abandoned after a timeout: pytest-django's database blocker must
            # still be restored.
            _close(steps)
        raise


def _first_database_step(steps: Generator[None], state: ConnectionState) -> None:
    # D's connection objects (on D, or on M in place): what pytest-django's setup_databases
    # left on M's own (the serialized_rollback snapshot), which Django reads on these.
    give_connection_state(state)
    next(steps)


def _close(steps: Generator[Any]) -> None:
    with contextlib.suppress(ValueError):  # still running on the abandoned DB thread
        steps.close()


def sync_fixture(
    test: ItemRun, func: Callable[..., Any], name: str, request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """A sync fixture of an async-DB test, as the test's sync code (each step of a
    generator fixture)."""
    if not inspect.isgeneratorfunction(func):
        return functools.partial(test.sync, func)

    def steps(**kwargs: Any) -> Generator[Any]:
        __tracebackhide__ = True
        gen = func(**kwargs)  # runs none of its code
        yield test.sync(_first, gen, name)
        test.sync(_rest, gen, name)

    return steps


def tool_on_db_thread(
    db: DBThread, make_tool: Callable[..., Any], name: str, request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """A connection-bound tool of pytest-django whose context managers live on D."""
    counts = name in NUM_QUERIES

    def fixture(**kwargs: Any) -> Callable[..., OnDBThread[Any]]:
        tool: Callable[..., Any] = make_tool(**kwargs)

        @functools.wraps(tool)
        def on_db_thread(*args: Any, **options: Any) -> OnDBThread[Any]:
            make = functools.partial(
                _counting_on_db_thread if counts else _made, tool, args, options
            )
            if name == ON_COMMIT and uses_async_backend():
                # And django-async-backend's callbacks (see _asyncbackend).
                from django.db import DEFAULT_DB_ALIAS

                using = options.get("using", DEFAULT_DB_ALIAS)
                return CapturedCallbacks(db, make, using, options.get("execute", False))
            return OnDBThread(db, make)

        return on_db_thread

    return fixture


def _made(tool: Callable[..., T], args: Any, options: dict[str, Any]) -> T:
    return tool(*args, **options)


def _counting_on_db_thread(tool: Callable[..., Any], args: Any, options: dict[str, Any]) -> Any:
    # D. pytest-django counts on django.db.connection, a proxy that resolves to
    # the calling thread's connection each time: give it D's, so that the
    # test's code on M reads D's queries in what the context manager returns.
    if len(args) < 2 and options.get("connection") is None:
        from django.db import DEFAULT_DB_ALIAS, connections

        options = dict(options)
        options["connection"] = connections[options.pop("using", None) or DEFAULT_DB_ALIAS]
    return tool(*args, **options)


def _first(gen: Generator[T], name: str) -> T:
    __tracebackhide__ = True
    try:
        return next(gen)
    except StopIteration:
        raise ValueError(f"{name} did not yield a value") from None


def _rest(gen: Generator[Any], name: str) -> None:
    __tracebackhide__ = True
    try:
        next(gen)
    except StopIteration:
        return
    pytest.fail(f"fixture {name} has more than one yield", pytrace=False)
