"""pytest-asyncio's internals, as the plugin touches them (nowhere else).

pytest-asyncio runs the tests and fixtures it claims on asyncio.Runners of its
own (its _<scope>_scoped_runner fixtures), calling their run(). Each runner's
run() is replaced, on the instance, by one that runs the coroutine as a Run of
ours (see _loop): watched by the blocking detector and the test's timeout, its
tasks counted for the leak report, and, for an async-DB test, its loop routed
to the DB thread (route 3), so that tasks started with an empty context
(channels' WebsocketCommunicator) reach the test's transaction too.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from djasynctest._loop import (
    Loop,
    Run,
    add_note,
    bound_elsewhere,
)
from djasynctest._plugin_django import close_async_backend
from djasynctest._plugin_item import ITEM_RUN, now, options_of, warn_at_item
from djasynctest._routing import (
    route_loop,
    unroute_loop,
)

__unittest = True

T = TypeVar("T")


def asyncio_mode(config: pytest.Config) -> str | None:
    """pytest-asyncio's mode (``"strict"``, ``"auto"``), or None when it is not active."""
    if not config.pluginmanager.has_plugin("asyncio"):
        return None
    mode: str = config.getoption("asyncio_mode") or config.getini("asyncio_mode")
    return mode


def claimed_by_pytest_asyncio(config: pytest.Config, func: Any) -> bool:
    """Whether pytest-asyncio runs this async fixture (auto mode, or its own decorator)."""
    mode = asyncio_mode(config)
    return mode == "auto" or (
        mode is not None
        and getattr(getattr(func, "__func__", func), "_force_asyncio_fixture", False)
    )


def is_pytest_asyncio_test(item: pytest.Function) -> bool:
    from pytest_asyncio import is_async_test

    return is_async_test(item)


_RUNS = pytest.StashKey[dict[int, Run]]()  # id(loop) -> the item's Run on that loop


def is_pytest_asyncio_runner(fixturedef: pytest.FixtureDef[Any]) -> bool:
    name = fixturedef.argname
    return (
        name.startswith("_")
        and name.endswith("_scoped_runner")
        and getattr(fixturedef.func, "__module__", "") == "pytest_asyncio.plugin"
    )


def watch_pytest_asyncio_runner(
    runner: Any, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """M: run what pytest-asyncio runs on ``runner`` (a fixture's value) as ours run."""
    if not isinstance(runner, asyncio.Runner) or getattr(runner, "_djat_watched", False):
        return
    loop = Loop(fixturedef.scope, runner=runner)

    def run(coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None) -> T:
        __tracebackhide__ = True
        return _run_for_pytest_asyncio(loop, coro, context or contextvars.copy_context())

    runner.run = run  # type: ignore[method-assign]
    runner._djat_watched = True  # type: ignore[attr-defined]
    if fixturedef.scope == "function":
        # Before the runner closes its loop, cancelling what is left on it.
        item = request.node
        fixturedef.addfinalizer(functools.partial(_check_pytest_asyncio_leaks, item, loop))
        test = item.stash.get(ITEM_RUN, None)
        if test is not None:
            fixturedef.addfinalizer(functools.partial(close_async_backend, test, loop.loop))


def _run_for_pytest_asyncio(
    loop: Loop, coro: Coroutine[Any, Any, T], context: contextvars.Context
) -> T:
    """M: ``coro`` on a loop of pytest-asyncio's, for the current test item."""
    __tracebackhide__ = True
    item = now.item
    if item is None:
        return loop.run(coro, context)
    # The test's own code: its body, and its function-scoped fixtures. A fixture of
    # a longer scope, set up or torn down here, gets the watch and a timeout only.
    owned = now.phase == "call" or (now.phase == "setup" and now.fixture_scope == "function")
    runs = item.stash.setdefault(_RUNS, {})
    watched = runs.get(id(loop.loop)) if owned else None
    if watched is None:
        watched = Run(
            loop,
            options_of(item),
            item.nodeid,
            warn=functools.partial(warn_at_item, item, function=owned),
            test=owned,
        )
        if owned:
            runs[id(loop.loop)] = watched
    test = item.stash.get(ITEM_RUN, None)
    db = None if test is None else test.db
    if db is not None:
        route_loop(loop.loop, db)
    try:
        return watched.run(coro, context)
    except RuntimeError as exc:
        if loop.scope in _PYTEST_SCOPES[:-1] and bound_elsewhere(exc):
            add_note(exc, _pytest_asyncio_loop_hint(loop.scope, options_of(item).loop_scope))
        raise
    finally:
        if db is not None:
            unroute_loop(loop.loop)


_PYTEST_SCOPES = ("function", "class", "module", "package", "session")


def _pytest_asyncio_loop_hint(theirs: str, ours: str) -> str:
    """The fix for an object of another loop used on pytest-asyncio's loop of scope ``theirs``,
    by a test whose djasynctest ``loop_scope`` is ``ours`` (as the classes name it)."""
    ours = "function" if ours == "test" else ours
    said = (
        "djasynctest: an object bound to another event loop was used here: pytest-asyncio runs "
        f'this code on a loop of its own, of scope "{theirs}"'
    )
    gone = (
        "so an object kept from an earlier loop (a global async client, a lock, a queue) is "
        "bound to a loop that is gone"
    )
    if _PYTEST_SCOPES.index(ours) > _PYTEST_SCOPES.index(theirs):
        return (
            f'{said}, and not on the loop of djasynctest\'s loop_scope = "{ours}", {gone}. Set '
            f"pytest-asyncio's ini options asyncio_default_test_loop_scope = {ours} and "
            f"asyncio_default_fixture_loop_scope = {ours}, or disable pytest-asyncio "
            "(-p no:asyncio, and no asyncio_* ini options) to let djasynctest run the async "
            "tests."
        )
    return (
        f"{said}, {gone}. Set pytest-asyncio's ini options asyncio_default_test_loop_scope = "
        "session and asyncio_default_fixture_loop_scope = session to run every test on one "
        "loop, or make the object anew on each loop."
    )


def _check_pytest_asyncio_leaks(item: pytest.Item, loop: Loop) -> None:
    __tracebackhide__ = True
    watched = item.stash.get(_RUNS, {}).get(id(loop.loop))
    if watched is not None:
        watched.check_leaks()


def finish_pytest_asyncio_runs(item: pytest.Item) -> None:
    """M, as the item's teardown ends: report what pytest-asyncio ran for it on loops that
    outlive it (and close those runs)."""
    __tracebackhide__ = True
    runs = item.stash.get(_RUNS, {})
    try:
        for watched in runs.values():
            watched.check_leaks()
    finally:
        for watched in runs.values():
            watched.close()
        runs.clear()
