"""One test's run, as the classes (``_case``) and the pytest plugin both drive it.

M is the test's thread (it runs the test's loop, and its sync code as Django
and pytest run it); D is the DB thread (the database work of async code).

``TestRun`` knows where the test's sync code goes and runs it there:

- in place (no ``timeout``): here on M, on D's connection objects, which hold
  the class's and the test's transactions (``lend`` borrows them), once D is
  idle (a query that a cancelled task left running ends first);
- with a ``timeout``: on D, which M can then give up on; M waits for it with
  the deadline, and serves it meanwhile (an async hook that a sync wrapper
  calls runs on M's loop: ``from_sync_code``).

Its ``run`` (``_loop.Run``) is the test's code on its loop: the watch, the
deadline, the leak check.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from asgiref.sync import async_to_sync

from djasynctest._dbthread import DBThread, lend_connections, outcome
from djasynctest._diagnostics import Deadline
from djasynctest._loop import Run
from djasynctest._routing import adopt, run_in

__unittest = True

T = TypeVar("T")

RunCoroutine = Callable[[Coroutine[Any, Any, Any], contextvars.Context], Any]

# In the context of the test's sync code while it runs (on M, or on D for M): its run.
_SYNC_CODE: contextvars.ContextVar[TestRun | None] = contextvars.ContextVar(
    "djasynctest_sync_code", default=None
)


class TestRun:
    """Where one test's sync code runs, and how; its ``run`` once it has a loop.

    ``db`` is None until the test's database is set up (pytest-django's fixture,
    under the plugin); ``coroutine(coro, context)`` runs a coroutine of the test on
    its loop (the face's: the classes pick the loop lazily).
    """

    __test__ = False  # not a test class, for pytest

    def __init__(
        self,
        *,
        in_place: bool,
        db: DBThread | None = None,
        coroutine: RunCoroutine | None = None,
    ) -> None:
        self.in_place = in_place
        self.db = db
        self.run: Run | None = None
        self.coroutine = coroutine
        self._give_back: Callable[[], None] | None = None

    @property
    def deadline(self) -> Deadline | None:
        return None if self.run is None else self.run.deadline

    def lend(self, db: DBThread) -> Callable[[], None]:
        """M: borrow D's connection objects until the returned callable gives them back."""
        self.db = db
        return lend_connections(db)

    def lend_for_the_run(self, db: DBThread) -> None:
        """M: borrow D's connection objects until ``close``."""
        self._give_back = self.lend(db)

    def wait(self, job: Future[T]) -> T:
        """M: the outcome of a job of this test on D, within the test's timeout."""
        __tracebackhide__ = True
        deadline = self.deadline
        return outcome(job) if deadline is None else deadline.result(job)

    def sync(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """M: run the test's sync code ``func`` where it belongs (see the module), in the
        current context, as pytest runs fixtures (on D, in a copy, whose changes are then
        set here too, as asgiref's ``sync_to_async`` does)."""
        __tracebackhide__ = True
        return self.sync_in(None, func, *args, **kwargs)

    def sync_in(
        self,
        context: contextvars.Context | None,
        func: Callable[..., T],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """M: ``sync`` in ``context`` (None: the current one)."""
        __tracebackhide__ = True
        db = self.db
        assert db is not None, "the test's database is not set up"
        call: Callable[[], T] = functools.partial(_as_sync_code, self, func, *args, **kwargs)
        if self.in_place:
            db.idle()
            return call() if context is None else run_in(context, call)
        copied = context is None
        if copied:
            context = contextvars.copy_context()
        assert context is not None
        if db.is_current():
            result = run_in(context, call)
        else:
            # M serves the job while it waits (see from_sync_code).
            result = self.wait(db.submit_hosted(run_in, context, call))
        if copied:
            adopt(context)
        return result

    def idle(self) -> None:
        """M, in place: once D's jobs are done, sync code may touch its connection objects."""
        if self.in_place and self.db is not None:
            self.db.idle()

    def close(self) -> None:
        """M: give D's connection objects back, and end the run's timeout; once."""
        give_back, self._give_back = self._give_back, None
        try:
            if give_back is not None:
                give_back()
        finally:
            if self.run is not None:
                self.run.close()


def from_sync_code(coro: Coroutine[Any, Any, T]) -> T | Coroutine[Any, Any, T]:
    """Run ``coro`` to the end on the test's loop, if the test's sync code (a hook, the
    test, a cleanup: ``TestRun.sync``) made it: in place, here; from D, on M, which waits
    for D meanwhile. Anywhere else, ``coro`` is returned as it is.

    The context goes to the loop and comes back, as asgiref's ``async_to_sync``
    takes it.
    """
    __tracebackhide__ = True
    test = _SYNC_CODE.get()
    if test is None:
        return coro
    db = test.db
    run_coroutine = test.coroutine
    if db is None or run_coroutine is None:
        return coro
    here = test.in_place and not db.is_current()
    if not (here or db.is_current()):
        return coro
    context = contextvars.copy_context()
    try:
        if here:
            return run_coroutine(coro, context)  # type: ignore[no-any-return]
        return db.ask_caller(functools.partial(run_coroutine, coro, context))  # type: ignore[no-any-return]
    except LookupError:
        # Not called from a hook (by hand, from a sync test): a loop of its own.
        return async_to_sync(awaited)(coro)  # type: ignore[no-any-return]
    finally:
        adopt(context)


def _as_sync_code(test: TestRun, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    __tracebackhide__ = True
    token = _SYNC_CODE.set(test)
    try:
        return func(*args, **kwargs)
    finally:
        _SYNC_CODE.reset(token)


async def awaited(awaitable: Any) -> Any:
    return await awaitable
