"""Django's connection-bound test tools, made to act on the DB thread's connections.

``assertNumQueries`` and ``captureOnCommitCallbacks`` look up
``connections[using]``, which is per thread: called from async code they would
read the test thread's connection, which runs no query (or raise
``SynchronousOnlyOperation`` while opening it). Here Django's own context
managers are made, entered and exited on the DB thread, so that they count and
capture what the test's code really did there.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from asgiref.sync import async_to_sync
from django.test.signals import setting_changed, update_connections_time_zone
from django.test.utils import modify_settings, override_settings
from django.utils.functional import cached_property

from djasynctest._dbthread import DBThread, running_db_thread

__unittest = True

T = TypeVar("T")


# What runners set on the connection objects of their own thread (M), which
# Django reads from those of the thread that runs the test (D):
# setup_databases(debug_sql=True) (manage.py test --debug-sql) and
# _test_serialized_contents, the snapshot serialized_rollback restores (set by
# setup_databases and by parallel workers).
_RUNNER_STATE = ("force_debug_cursor", "_test_serialized_contents")
# Cached properties of a connection object that are not facts about the database.
_NOT_FACTS = ("timezone", "timezone_name", "wrap_database_errors")

ConnectionState = dict[str, tuple[dict[str, Any], dict[str, Any]]]


def connection_state() -> ConnectionState:
    """M: what the DB thread's connection objects take from this thread's, by alias.

    The state runners set (``_RUNNER_STATE``), and the facts about the database
    that a connection object learns with a query the first time they are read
    and then caches (``features.supports_json_field``, ``pg_version``): the
    runner's checks learnt them on M's, and a ``SimpleTestCase``, which may not
    query, may read them on D's (``run_checks()`` does).
    """
    from django.db import connections

    state: ConnectionState = {}
    for connection in connections.all(initialized_only=True):
        cached = _cached_properties(type(connection))
        own = {
            name: value
            for name, value in vars(connection).items()
            if name in _RUNNER_STATE or (name in cached and name not in _NOT_FACTS)
        }
        features = _cached_properties(type(connection.features))
        facts = {
            name: value for name, value in vars(connection.features).items() if name in features
        }
        state[connection.alias] = (own, facts)
    return state


def give_connection_state(state: ConnectionState) -> None:
    """D: give this thread's connection objects what ``connection_state`` read on M."""
    from django.db import connections

    for alias, (own, facts) in state.items():
        connection = connections[alias]
        vars(connection).update(own)
        vars(connection.features).update(facts)


_CACHED_PROPERTIES: dict[type, frozenset[str]] = {}


def _cached_properties(kind: type) -> frozenset[str]:
    """The names of the ``cached_property`` attributes of ``kind`` (found once per class)."""
    names = _CACHED_PROPERTIES.get(kind)
    if names is None:
        names = _CACHED_PROPERTIES[kind] = frozenset(
            name
            for klass in kind.__mro__
            for name, value in vars(klass).items()
            if isinstance(value, cached_property)
        )
    return names


def loop_running() -> bool:
    """Whether the calling thread runs an event loop (async code of a test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SyncClient:
    """What Django's ``assertRedirects`` needs of ``response.client``, for an ``AsyncClient``.

    Django fetches the redirect target with ``response.client.get(...)``; an
    ``AsyncClient`` returns a coroutine there. On the DB thread, ``async_to_sync``
    runs it to completion, its ORM calls coming back to the DB thread.
    """

    def __init__(self, client: Any) -> None:
        self.extra = client.extra
        self.headers = client.headers
        self.get = async_to_sync(client.get)


class _AsyncWith:
    """``async with`` for a settings override: it changes settings, which never waits."""

    async def __aenter__(self) -> Any:
        return self.__enter__()  # type: ignore[attr-defined]

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)  # type: ignore[attr-defined]


class AsyncOverrideSettings(_AsyncWith, override_settings):
    """``override_settings`` that also works as ``async with``."""


class AsyncModifySettings(_AsyncWith, modify_settings):
    """``modify_settings`` that also works as ``async with``."""


def update_db_thread_time_zone(*, setting: str, **kwargs: Any) -> None:
    """``setting_changed`` receiver: Django's time-zone reset, for the DB thread's connections.

    Django resets the time zone of the connections of the thread that changes
    the setting; an async test changes it on the loop's thread.
    """
    if setting not in {"TIME_ZONE", "USE_TZ"}:
        return
    db = running_db_thread()
    if db is not None and not db.is_current():
        db.call(update_connections_time_zone, setting=setting, **kwargs)


def keep_test_transactions(*, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: a request must not end the test's transaction.

    Django's ``close_old_connections`` (run by ``request_started`` and
    ``request_finished``, and directly by channels' ``database_sync_to_async``)
    closes a connection whose autocommit differs from its settings, which is
    always so inside a test's transaction. Django's test client disconnects it
    around its requests; requests served by a live server, and consumers, run it
    all the same. So on the DB thread's connections, while a test case's atomic
    is open, closing an "obsolete" connection is left out, as if the request had
    come through the test client.
    """
    db = running_db_thread()
    if db is None or not db.owns(connection) or getattr(connection, "_djat_keeps", False):
        return
    close_if_obsolete = connection.close_if_unusable_or_obsolete

    def close_unless_in_a_test_transaction() -> None:
        if not any(getattr(atomic, "_from_testcase", False) for atomic in connection.atomic_blocks):
            close_if_obsolete()

    connection.close_if_unusable_or_obsolete = close_unless_in_a_test_transaction
    connection._djat_keeps = True


_receivers_connected = False


def connect_receivers() -> None:
    """Connect the library's signal receivers, once per process.

    Each ``connect`` clears the signal's cache of receivers, which every later
    ``send`` then rebuilds: doing it for each test class would cost both.
    """
    global _receivers_connected
    if _receivers_connected:
        return
    _receivers_connected = True
    from django.db.backends.signals import connection_created

    from djasynctest._diagnostics import on_connection_created

    setting_changed.connect(update_db_thread_time_zone, dispatch_uid=__name__)
    connection_created.connect(on_connection_created, dispatch_uid=__name__)
    connection_created.connect(keep_test_transactions, dispatch_uid=f"{__name__}.keep")


class OnDBThread(Generic[T]):
    """A context manager, for ``with`` and ``async with``, that lives on the DB thread.

    ``make`` builds the underlying context manager; it, ``__enter__`` and
    ``__exit__`` all run on the DB thread. ``with`` from async code waits for the
    DB thread without giving the loop back (a short hop: the DB thread is idle
    while the test's own code runs); ``async with`` awaits it.
    """

    def __init__(self, db: DBThread, make: Callable[[], AbstractContextManager[T]]) -> None:
        self._db = db
        self._make = make
        self._cm: AbstractContextManager[T] | None = None

    def _enter(self) -> T:
        self._cm = self._make()
        return self._cm.__enter__()

    def _exit(self, *exc_info: Any) -> bool | None:
        __tracebackhide__ = True
        assert self._cm is not None, "exited before it was entered"
        return self._cm.__exit__(*exc_info)

    def __enter__(self) -> T:
        return self._db.call(self._enter)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        __tracebackhide__ = True
        return self._db.call(self._exit, exc_type, exc, tb)

    async def __aenter__(self) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, self._enter)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        __tracebackhide__ = True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._db, functools.partial(self._exit, exc_type, exc, tb)
        )


def call_inside(
    context: OnDBThread[Any], func: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``assertNumQueries(n, func, ...)``: call ``func`` inside ``context``.

    When ``func`` returns an awaitable (an async function, an async manager
    method such as ``Model.objects.acount``), the result is an awaitable too,
    and the context ends when it is awaited.
    """
    __tracebackhide__ = True
    context.__enter__()
    try:
        result = func(*args, **kwargs)
    except BaseException:
        if not context.__exit__(*sys.exc_info()):
            raise
        return None
    if not inspect.isawaitable(result):
        context.__exit__(None, None, None)
        return result

    async def finish() -> Any:
        __tracebackhide__ = True
        try:
            value = await result
        except BaseException:
            if not await context.__aexit__(*sys.exc_info()):
                raise
            return None
        await context.__aexit__(None, None, None)
        return value

    return finish()
