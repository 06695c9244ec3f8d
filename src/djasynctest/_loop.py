"""Event loops: one per test (IsolatedAsyncioTestCase's way) or one per class.

With ``loop_scope = "class"``, one ``asyncio.Runner`` and one
``contextvars.Context`` serve the whole class: ``asyncSetUpClass``, every test
(each in a copy of the class context, so that what the class set up is
visible and what a test sets is not seen by the next) and
``asyncTearDownClass``. The class context routes thread-sensitive calls to
the DB thread, so that global async clients made in ``asyncSetUpClass`` can
reach the ORM too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from djasynctest._dbthread import DBThread, db_thread
from djasynctest._routing import enter_routing, exit_routing, route_loop, unroute_loop

__unittest = True

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None


def new_runner(*, debug: bool, loop_factory: LoopFactory) -> asyncio.Runner:
    """A runner with its loop made, and routed to the DB thread (close it with close_runner)."""
    runner = asyncio.Runner(debug=debug, loop_factory=loop_factory)
    route_loop(runner.get_loop(), db_thread())
    return runner


def close_runner(runner: asyncio.Runner) -> None:
    try:
        unroute_loop(runner.get_loop())
    finally:
        runner.close()


class ClassLoop:
    """The event loop and context of a class with ``loop_scope = "class"`` (M)."""

    def __init__(self, db: DBThread, *, debug: bool, loop_factory: LoopFactory) -> None:
        self.runner = new_runner(debug=debug, loop_factory=loop_factory)
        self.loop = self.runner.get_loop()
        self.context = contextvars.copy_context()
        self._routing = self.context.run(enter_routing, db)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro, context=self.context)

    def close(self) -> None:
        try:
            self.context.run(exit_routing, self._routing)
        finally:
            close_runner(self.runner)
