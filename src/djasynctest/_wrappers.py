"""Async hooks and tests behind sync wrappers: they still run, on the test's loop.

A sync decorator around an ``async def`` hook or test either returns its
coroutine (the mixin then runs it on the loop, as ``IsolatedAsyncioTestCase``
does) or calls it and drops what it returns: freezegun's class decorator
replaces ``setUp`` and ``tearDown`` so, after the class is made; a
``functools.wraps`` decorator may. For those, the async function the wrapper
calls is replaced, when the class is made, with ``callable_from_sync_code`` of
it: called as usual, it returns its coroutine; called from the test's sync code
(``TestRun.sync``), where the mixin runs the wrapper, it runs the coroutine on
the test's loop to the end (``_testrun.from_sync_code``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from djasynctest._dbtools import loop_running
from djasynctest._testrun import from_sync_code

__unittest = True

# The hooks that sync decorators wrap after the class is made.
_WRAPPED_HOOKS = ("setUp", "tearDown", "asyncSetUp", "asyncTearDown")


def reach_through_sync_wrappers(cls: type) -> None:
    """At class creation: make every async hook and test of ``cls`` run behind a sync wrapper."""
    for name, attr in list(vars(cls).items()):
        if name in _WRAPPED_HOOKS and iscoroutinefunction(attr):
            # freezegun's class decorator, applied after this, wraps it.
            setattr(cls, name, callable_from_sync_code(attr))
        elif name in _WRAPPED_HOOKS or name.startswith("test"):
            _reach_through(attr, cls)


def callable_from_sync_code(func: Callable[..., Any]) -> Callable[..., Any]:
    """An async hook that still runs when a sync wrapper calls it and drops the result."""
    if getattr(func, "_djat_from_sync", False):
        return func

    @functools.wraps(func)
    def hook(*args: Any, **kwargs: Any) -> Any:
        coro = func(*args, **kwargs)
        if loop_running():
            return coro
        return from_sync_code(coro)

    hook._djat_from_sync = True  # type: ignore[attr-defined]
    return markcoroutinefunction(hook)


def _reach_through(attr: Any, cls: type) -> None:
    """Make a sync wrapper around an async hook or test call it so that it runs.

    The wrapper's reference to the async function (a ``functools.wraps``
    closure, hypothesis's ``inner_test``) is replaced with
    ``callable_from_sync_code`` of it, which returns the same coroutine where a
    coroutine is expected.
    """
    given = getattr(attr, "hypothesis", None)
    inner_test = getattr(given, "inner_test", None)
    if inner_test is not None and iscoroutinefunction(inner_test):
        # Hypothesis's @given: its documented hook for plugins that run async
        # tests; unless the class runs them itself (execute_example).
        if hasattr(cls, "execute_example"):
            return
        given.inner_test = callable_from_sync_code(inner_test)  # type: ignore[union-attr]
        return
    wrapper = attr
    while (inner := getattr(wrapper, "__wrapped__", None)) is not None:
        if iscoroutinefunction(inner):
            if not iscoroutinefunction(wrapper):
                for cell in getattr(wrapper, "__closure__", None) or ():
                    if cell.cell_contents is inner:
                        cell.cell_contents = callable_from_sync_code(inner)
            return
        wrapper = inner
