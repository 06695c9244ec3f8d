"""django-async-backend's connections, inside the test's transaction.

django-async-backend (``ENGINE = "django_async_backend.db.backends.postgresql"``)
gives each task its own ``AsyncDatabaseWrapper`` over a psycopg
``AsyncConnection``: another connection than the DB thread's, so outside the
class and test transactions, where it sees none of the test's rows and its own
writes are committed. PostgreSQL cannot share a transaction between two
sessions; so, while a ``TestCase`` of ours runs, such a wrapper gets no
connection of its own:

* its "connection" is a stand-in, and each cursor it makes is the DB thread's
  own cursor for the alias (Django's, so ``assertNumQueries`` counts its
  queries), every call of it handed to the DB thread: one connection, one
  transaction, as for Django's ORM;
* it starts inside an atomic block, as Django's connections do in a
  ``TestCase``: ``async_atomic`` makes a savepoint, ``durable=True`` is allowed,
  ``on_commit`` callbacks wait for a commit that never comes, and an error
  outside ``async_atomic`` breaks the test's transaction, as Django's ORM does;
* the task that owns it (django-async-backend lets one task use a wrapper) is
  the one that uses it after the task that used it last has ended: hooks, the
  test and requests of the test client run as tasks one after another;
* closing it closes nothing (its request signals close wrappers at each
  request of the test client);
* the transactions of bridged wrappers of tasks that run at once take turns
  (savepoints must nest on the one connection: see the end of this module);
* ``captureOnCommitCallbacks`` captures its callbacks too (``CapturedCallbacks``).

Everything else (its ORM, compiler, ``async_atomic``, savepoint ids) is
django-async-backend's own. Outside such a test (``AsyncTransactionTestCase``,
code not under test), it connects as usual; the wrappers that connected while a
test ran are closed when it ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from djasynctest._dbthread import DBThread, db_thread
from djasynctest._dbtools import OnDBThread

__unittest = True

T = TypeVar("T")

ENGINE = "django_async_backend.db.backends.postgresql"

# The aliases whose async-backend wrappers join the test's transaction, set in the
# context of a TestCase class (and so of its tests).
_BRIDGED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "djasynctest.async_backend_bridged", default=frozenset()
)


def uses_async_backend() -> bool:
    """Whether a database of the project uses django-async-backend's engine (asked for
    each test: the answer is kept for the settings' ``DATABASES``)."""
    from django.conf import settings

    global _uses
    databases = settings.DATABASES
    if _uses[0] is not databases:
        _uses = databases, any(db.get("ENGINE") == ENGINE for db in databases.values())
    return _uses[1]


_uses: tuple[Any, bool] = (None, False)  # DATABASES, and whether it uses the engine


def bridge(aliases: Collection[str]) -> contextvars.Token[frozenset[str]]:
    """In the current (class or test) context: these aliases' async wrappers, made from
    now on, join the test's transaction (see the module's notes). ``unbridge`` with the
    token undoes it."""
    _install()
    return _BRIDGED.set(frozenset(aliases))


def unbridge(token: contextvars.Token[frozenset[str]]) -> None:
    _BRIDGED.reset(token)


def is_bridged(connection: Any) -> bool:
    return getattr(connection, "_djat_bridged", False)


# The wrappers that connected for real while a test ran (not bridged: an
# AsyncTransactionTestCase, the plugin's transactional_db), each with the loop it
# connected on, to close when the test ends.
_OPENED: contextvars.ContextVar[list[tuple[Any, asyncio.AbstractEventLoop]] | None] = (
    contextvars.ContextVar("djasynctest.async_backend_opened", default=None)
)


def watch_opened() -> tuple[list[Any], contextvars.Token[Any]]:
    """In a test's context: the list of the async wrappers that will connect in it (and
    the token that ends the watch)."""
    _install()
    opened: list[Any] = []
    return opened, _OPENED.set(opened)


def unwatch_opened(token: contextvars.Token[Any]) -> None:
    _OPENED.reset(token)


def opened_on(opened: list[Any]) -> list[asyncio.AbstractEventLoop]:
    """The loops the watched wrappers connected on, in the order they first did."""
    return list(dict.fromkeys(loop for _, loop in opened))


async def close_opened(opened: list[Any], loop: asyncio.AbstractEventLoop | None = None) -> None:
    """On the loop they connected on (``loop``; all of them when None), as the test ends:
    close them, and the connection pools they took connections from, as its request
    signals, and the end of the process, would in production. The flush after the
    test, and dropping the test database, need it; a pool cannot outlive its loop."""
    pooled = {}  # alias -> a wrapper of its pool
    errors = []
    for wrapper, on in list(opened):
        if loop is None or on is loop:
            opened.remove((wrapper, on))
            if wrapper.settings_dict["OPTIONS"].get("pool"):
                pooled[wrapper.alias] = wrapper
            try:
                await wrapper.close()  # into its pool, if it has one
            except Exception as exc:  # the others are closed all the same
                errors.append(exc)
    for wrapper in pooled.values():
        try:
            await wrapper.close_pool()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


# The replaced methods of AsyncDatabaseWrapper (by name) and AsyncAtomic
# ("AsyncAtomic.<name>"), once replaced: see _REPLACEMENTS, _ATOMIC_REPLACEMENTS.
ORIGINALS: dict[str, Any] = {}


def _install() -> None:
    if ORIGINALS:
        return
    from django_async_backend.db.backends.postgresql.async_base import (  # type: ignore[import-not-found]
        AsyncDatabaseWrapper,
    )
    from django_async_backend.db.transaction import AsyncAtomic  # type: ignore[import-not-found]

    for name, replace in _REPLACEMENTS.items():
        ORIGINALS[name] = original = getattr(AsyncDatabaseWrapper, name)
        setattr(AsyncDatabaseWrapper, name, replace(original))
    for name, replace in _ATOMIC_REPLACEMENTS.items():
        ORIGINALS[f"AsyncAtomic.{name}"] = original = getattr(AsyncAtomic, name)
        setattr(AsyncAtomic, name, replace(original))


async def _on_db_thread(func: Callable[[], T]) -> T:
    # Straight to the DB thread's queue: whatever the task's context routes to.
    future: Any = db_thread().submit(func)  # an asyncio future, from a loop
    result: T = await future
    return result


class _Connection:
    """What an async wrapper has for a psycopg ``AsyncConnection`` while bridged."""

    closed = False
    autocommit = False

    async def set_autocommit(self, value: bool) -> None:
        pass

    async def close(self) -> None:
        pass


class _Cursor:
    """An async cursor whose calls run the DB thread's cursor for the alias."""

    def __init__(self, alias: str, name: str | None) -> None:
        self._alias = alias
        self._name = name
        self._cursor: Any = None

    def _own(self) -> Any:
        # D: Django's cursor of the DB thread's connection (named: server-side).
        if self._cursor is None:
            from django.db import connections

            connection: Any = connections[self._alias]
            self._cursor = connection._cursor(self._name) if self._name else connection.cursor()
        return self._cursor

    async def execute(self, sql: Any, params: Any = None) -> _Cursor:
        await _on_db_thread(lambda: self._own().execute(sql, params))
        return self

    async def executemany(self, sql: Any, param_list: Any) -> _Cursor:
        await _on_db_thread(lambda: self._own().executemany(sql, param_list))
        return self

    async def fetchone(self) -> Any:
        return await _on_db_thread(lambda: self._own().fetchone())

    async def fetchmany(self, size: int | None = None) -> Any:
        if size is None:
            return await _on_db_thread(lambda: self._own().fetchmany())
        return await _on_db_thread(lambda: self._own().fetchmany(size))

    async def fetchall(self) -> Any:
        return await _on_db_thread(lambda: self._own().fetchall())

    async def close(self) -> None:
        cursor = self._cursor
        if cursor is not None:
            await _on_db_thread(cursor.close)

    async def __aiter__(self) -> Any:
        while rows := await self.fetchmany(100):
            for row in rows:
                yield row

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(_NOT_BRIDGED.format(what="cursor.stream()"))

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(_NOT_BRIDGED.format(what="cursor.copy()"))

    def __getattr__(self, name: str) -> Any:
        # rowcount, description, statusmessage... of the last call; before any, of a
        # cursor the DB thread makes now (a short wait: it is idle while this code runs).
        if name.startswith("__"):
            raise AttributeError(name)
        cursor = self._cursor if self._cursor is not None else db_thread().call(self._own)
        return getattr(cursor, name)


_NOT_BRIDGED = (
    "djasynctest does not run django-async-backend's {what} inside a test's transaction "
    "yet. Use fetchmany() or the ORM in an AsyncTestCase, or test this code in an "
    "AsyncTransactionTestCase, where the async backend has a connection of its own."
)


class _TestCaseAtomic:
    """Stands for the class and test atomics, as Django's ``TestCase`` marks its own."""

    _from_testcase = True


def _init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # Made in the context of a test (its tasks and requests), for one of its
        # class's databases: bridged for its whole life.
        if self.alias in _BRIDGED.get():
            self._djat_bridged = True
            _in_the_tests_transaction(self)

    return __init__


def _in_the_tests_transaction(wrapper: Any) -> None:
    # As Django's connections are in a TestCase: inside its atomic blocks.
    wrapper.autocommit = False
    wrapper.in_atomic_block = True
    wrapper.commit_on_exit = False
    wrapper.atomic_blocks = [_TestCaseAtomic()]
    wrapper.savepoint_ids = [None]


def _get_new_connection(original: Any) -> Any:
    async def get_new_connection(self: Any, conn_params: Any) -> Any:
        if is_bridged(self):
            return _Connection()
        opened = _OPENED.get()
        if opened is not None:
            opened.append((self, asyncio.get_running_loop()))
        return await original(self, conn_params)

    return get_new_connection


def _connect(original: Any) -> Any:
    async def connect(self: Any) -> None:
        await original(self)  # which starts outside any atomic block
        if is_bridged(self):
            _in_the_tests_transaction(self)

    return connect


def _init_connection_state(original: Any) -> Any:
    async def init_connection_state(self: Any) -> None:
        if not is_bridged(self):  # the DB thread's connection is set up already
            await original(self)

    return init_connection_state


def _create_cursor(original: Any) -> Any:
    def create_cursor(self: Any, name: str | None = None) -> Any:
        if is_bridged(self):
            return _Cursor(self.alias, name)
        return original(self, name)

    return create_cursor


def _close(original: Any) -> Any:
    async def close(self: Any) -> None:
        if not is_bridged(self):
            await original(self)

    return close


def _validate_task_sharing(original: Any) -> Any:
    def validate_task_sharing(self: Any) -> None:
        owner: asyncio.Task[Any] | None = self._task
        if owner is not None and owner.done() and is_bridged(self):
            self._task = None  # its owner ended: the next task to use it owns it
        original(self)

    return validate_task_sharing


_REPLACEMENTS: dict[str, Callable[[Any], Any]] = {
    "__init__": _init,
    "get_new_connection": _get_new_connection,
    "connect": _connect,
    "init_connection_state": _init_connection_state,
    "create_cursor": _create_cursor,
    "close": _close,
    "validate_task_sharing": _validate_task_sharing,
}


class CapturedCallbacks(OnDBThread[list[Callable[[], Any]]]):
    """``captureOnCommitCallbacks`` (Django's, on the DB thread) that also captures the
    ``on_commit`` callbacks of the async backend's bridged wrapper for ``using`` in the
    current context, and with ``execute=True`` runs them (awaiting async ones under
    ``async with``), as Django's runs its own: in order, and those that they register
    too."""

    def __init__(self, db: DBThread, make: Callable[[], Any], using: str, execute: bool) -> None:
        super().__init__(db, make)
        self._using = using
        self._execute = execute
        self._callbacks: list[Any] = []
        self._wrapper: Any = None
        self._start = 0

    def _bridged_wrapper(self) -> Any:
        from django_async_backend.db import async_connections  # type: ignore[import-not-found]

        wrapper = getattr(async_connections._connections, self._using, None)
        return wrapper if wrapper is not None and is_bridged(wrapper) else None

    def _started(self, callbacks: list[Any]) -> list[Any]:
        self._callbacks = callbacks
        self._wrapper = self._bridged_wrapper()
        self._start = 0 if self._wrapper is None else len(self._wrapper.run_on_commit)
        return callbacks

    def _registered(self) -> Any:
        # Each callback registered on the wrapper since the block started, as it comes.
        wrapper = self._bridged_wrapper()
        if wrapper is None:
            return
        start = self._start if wrapper is self._wrapper else 0
        while start < len(wrapper.run_on_commit):
            _, callback, robust = wrapper.run_on_commit[start]
            start += 1
            self._callbacks.append(callback)
            yield callback, robust

    def __enter__(self) -> list[Any]:
        return self._started(super().__enter__())

    def __exit__(self, *exc_info: Any) -> Any:
        __tracebackhide__ = True
        result = super().__exit__(*exc_info)
        for callback, robust in self._registered():
            if self._execute:
                _run(callback, robust, awaited=None)
        return result

    async def __aenter__(self) -> list[Any]:
        return self._started(await super().__aenter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        __tracebackhide__ = True
        result = await super().__aexit__(*exc_info)
        for callback, robust in self._registered():
            if self._execute:
                awaitable = _run(callback, robust, awaited=True)
                if awaitable is not None:
                    await _robustly(awaitable, callback, robust)
        return result


def _run(callback: Any, robust: bool, *, awaited: bool | None) -> Any:
    """Call an on_commit callback (logging its error when ``robust``); an awaitable it
    returns is given back to await, or, in a sync ``with``, refused."""
    import inspect

    try:
        result = callback()
    except Exception:
        if not robust:
            raise
        _log(callback)
        return None
    if inspect.isawaitable(result):
        if awaited:
            return result
        if inspect.iscoroutine(result):
            result.close()
        msg = (
            f"The on_commit callback {callback!r} is async: run it with "
            "'async with self.captureOnCommitCallbacks(execute=True)'."
        )
        raise TypeError(msg)
    return None


async def _robustly(awaitable: Any, callback: Any, robust: bool) -> None:
    try:
        await awaitable
    except Exception:
        if not robust:
            raise
        _log(callback)


def _log(callback: Any) -> None:
    import logging

    name = getattr(callback, "__qualname__", callback)
    logging.getLogger("django.test").exception("Error calling %s in on_commit().", name)


# Transactions of bridged wrappers, one at a time --------------------------------------
#
# Every bridged wrapper's savepoints are on the one connection of the DB thread, where
# they must nest: two wrappers' transactions (async_new_connection in tasks that run
# together) would interleave their SAVEPOINT and RELEASE statements, and their savepoint
# names (the thread's id and a counter of each wrapper's) can be the same. So the
# outermost async_atomic of a bridged wrapper waits for the others' to end; the tasks
# it starts inside may open their own, one at a time among themselves.

# The lock the next outermost transaction of a bridged wrapper takes, in this task and
# the tasks it starts; unset: the running loop's.
_SERIAL: contextvars.ContextVar[asyncio.Lock | None] = contextvars.ContextVar(
    "djasynctest.async_backend_serial", default=None
)
_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _outermost(connection: Any) -> bool:
    # Only the test case's atomic is open: this block starts a transaction of its own.
    blocks = connection.atomic_blocks
    return len(blocks) == 1 and isinstance(blocks[0], _TestCaseAtomic)


def _atomic_enter(original: Any) -> Any:
    async def __aenter__(self: Any) -> Any:
        connection = await self.get_connection(self.using)
        if not (is_bridged(connection) and _outermost(connection)):
            return await original(self)
        lock = _SERIAL.get()
        if lock is None:
            lock = _loop_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        await lock.acquire()
        try:
            result = await original(self)
        except BaseException:
            lock.release()
            raise
        connection._djat_serial = (lock, _SERIAL.set(asyncio.Lock()))
        return result

    return __aenter__


def _atomic_exit(original: Any) -> Any:
    async def __aexit__(self: Any, *exc_info: Any) -> Any:
        connection = await self.get_connection(self.using)
        try:
            return await original(self, *exc_info)
        finally:
            held = getattr(connection, "_djat_serial", None)
            if held is not None and _outermost(connection):
                del connection._djat_serial
                lock, token = held
                _SERIAL.reset(token)
                lock.release()

    return __aexit__


_ATOMIC_REPLACEMENTS: dict[str, Callable[[Any], Any]] = {
    "__aenter__": _atomic_enter,
    "__aexit__": _atomic_exit,
}
