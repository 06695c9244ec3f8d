"""Event loops: one per test (IsolatedAsyncioTestCase's way) or one per class.

Every class has one ``contextvars.Context`` (see ``_classlevel``); each test
runs in a copy of it, so that what the class set up is visible and what a
test sets is not seen by the next. With ``loop_scope = "class"``, one
``asyncio.Runner`` serves the whole class too: ``asyncSetUpClass``, every test
and ``asyncTearDownClass``. The class context then routes thread-sensitive
calls to the DB thread, so that global async clients made in
``asyncSetUpClass`` can reach the ORM too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from djasynctest._dbthread import DBThread, db_thread
from djasynctest._routing import (
    claim_locals,
    enter_routing,
    exit_routing,
    route_loop,
    unroute_loop,
)

__unittest = True

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None


def new_runner(*, debug: bool, loop_factory: LoopFactory) -> asyncio.Runner:
    """A runner with its loop made, and routed to the DB thread (close it with close_runner)."""
    runner = asyncio.Runner(debug=debug, loop_factory=loop_factory)
    route_loop(runner.get_loop(), db_thread())
    return runner


def run_on(runner: asyncio.Runner, coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    """M: run ``coro`` on the runner's loop in ``context`` (which D may have used last)."""
    __tracebackhide__ = True
    context.run(claim_locals)
    return runner.run(coro, context=context)


def close_runner(runner: asyncio.Runner) -> None:
    try:
        unroute_loop(runner.get_loop())
    finally:
        runner.close()


class ClassLoop:
    """The event loop and context of a class with ``loop_scope = "class"`` (M)."""

    def __init__(
        self,
        db: DBThread,
        context: contextvars.Context,
        *,
        debug: bool,
        loop_factory: LoopFactory,
    ) -> None:
        self.runner = new_runner(debug=debug, loop_factory=loop_factory)
        self.loop = self.runner.get_loop()
        self.context = context
        self._routing = self.context.run(enter_routing, db)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return run_on(self.runner, coro, self.context)

    def close(self) -> None:
        try:
            self.context.run(exit_routing, self._routing)
        finally:
            close_runner(self.runner)
