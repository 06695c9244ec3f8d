"""The lean hop: a thread-sensitive call routed to the DB thread behaves as asgiref's own.

Each scenario runs twice in one process: routed to a plain one-thread executor
(asgiref's ``SyncToAsync.__call__`` does the work) and routed to the DB thread
(the lean hop does it). What the scenario observes must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.local import Local
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, async_to_sync, sync_to_async

from djasynctest import AsyncTestCase
from djasynctest._dbthread import db_thread
from djasynctest._routing import enter_routing, exit_routing, route_loop, unroute_loop
from tests.testapp.models import Item
from tests.utils import assert_passed, run_case

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")
LOCAL = Local()

Scenario = Callable[[], Awaitable[Any]]


@pytest.fixture(params=["asgiref", "lean"])
def routed(request: pytest.FixtureRequest) -> Iterator[Callable[[Scenario], Any]]:
    """Run a scenario on a fresh loop, its thread-sensitive calls routed to one thread."""
    plain = ThreadPoolExecutor(max_workers=1)
    executor = plain if request.param == "asgiref" else db_thread()
    handled = _count_asgiref_hops()

    def run(scenario: Scenario, *, hops: bool = True, asgiref_hops_when_lean: int = 0) -> Any:
        async def main() -> Any:
            routing = enter_routing(executor)
            try:
                return await scenario()
            finally:
                exit_routing(routing)

        before = handled()
        result = asyncio.run(main())
        # The lean hop is taken: asgiref's thread handler runs only for the calls
        # that asgiref routes itself (from inside async_to_sync).
        if request.param == "lean":
            assert handled() - before == asgiref_hops_when_lean
        else:
            assert (handled() > before) == hops
        return result

    yield run
    plain.shutdown()


def _count_asgiref_hops() -> Callable[[], int]:
    calls = [0]
    original = SyncToAsync.thread_handler

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(self, *args, **kwargs)

    patcher = pytest.MonkeyPatch()
    patcher.setattr(SyncToAsync, "thread_handler", counting)
    _PATCHERS.append(patcher)
    return lambda: calls[0]


_PATCHERS: list[pytest.MonkeyPatch] = []


@pytest.fixture(autouse=True)
def _undo_patches() -> Iterator[None]:
    yield
    while _PATCHERS:
        _PATCHERS.pop().undo()


def test_context_variables_go_both_ways(routed: Callable[[Scenario], Any]) -> None:
    def sync_side() -> tuple[str, str]:
        seen = (VAR.get(), getattr(LOCAL, "value", "unset"))
        VAR.set("set by sync code")
        LOCAL.value = "set by sync code too"
        return seen

    async def scenario() -> tuple[Any, ...]:
        VAR.set("set by async code")
        LOCAL.value = "set by async code too"
        seen = await sync_to_async(sync_side)()
        return (*seen, VAR.get(), LOCAL.value)

    assert routed(scenario) == (
        "set by async code",
        "set by async code too",
        "set by sync code",
        "set by sync code too",
    )


def test_the_sync_code_runs_on_one_thread_that_is_not_the_loops(
    routed: Callable[[Scenario], Any],
) -> None:
    async def scenario() -> bool:
        first = await sync_to_async(threading.get_ident)()
        second = await asyncio.create_task(sync_to_async(threading.get_ident)())
        return first == second != threading.get_ident()

    assert routed(scenario)


def _fails() -> None:
    raise ValueError("from sync code")


def test_an_exception_comes_back_with_the_sync_codes_frames(
    routed: Callable[[Scenario], Any],
) -> None:
    async def scenario() -> list[str]:
        try:
            await sync_to_async(_fails)()
        except ValueError as exc:
            return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        raise AssertionError("no exception")

    names = routed(scenario)
    assert names[0] == "scenario"
    assert names[-1] == "_fails"


def test_the_exception_being_handled_is_seen_by_the_sync_code(
    routed: Callable[[Scenario], Any],
) -> None:
    async def scenario() -> str:
        try:
            raise KeyError("outer")
        except KeyError:
            return await sync_to_async(lambda: repr(sys.exc_info()[1]))()

    assert routed(scenario) == "KeyError('outer')"


def test_a_cancelled_call_returns_at_once_and_the_sync_code_finishes(
    routed: Callable[[Scenario], Any],
) -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow() -> None:
        started.set()
        release.wait(10)
        finished.append("finished")

    async def scenario() -> tuple[str, list[str]]:
        task = asyncio.create_task(sync_to_async(slow)())
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            outcome = "cancelled"
        else:
            outcome = "returned"
        seen_before = list(finished)
        release.set()
        # The thread runs one call at a time: this one runs after slow() ends.
        await sync_to_async(lambda: None)()
        return outcome, seen_before + finished

    assert routed(scenario) == ("cancelled", ["finished"])


def test_a_call_cancelled_before_it_starts_never_runs(routed: Callable[[Scenario], Any]) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(10)

    async def scenario() -> list[str]:
        first = asyncio.create_task(sync_to_async(blocker)())
        await asyncio.to_thread(started.wait, 10)
        queued = asyncio.create_task(sync_to_async(lambda: ran.append("ran"))())
        await asyncio.sleep(0)  # queued behind blocker()
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued  # the cancel has reached the executor's queue
        release.set()
        await first
        await sync_to_async(lambda: None)()
        return ran

    assert routed(scenario) == []


async def _loop_and_thread() -> tuple[asyncio.AbstractEventLoop, int]:
    return asyncio.get_running_loop(), await sync_to_async(threading.get_ident)()


def test_async_to_sync_inside_runs_on_the_calling_loop(routed: Callable[[Scenario], Any]) -> None:
    def sync_side() -> tuple[Any, ...]:
        loop, inner_thread = async_to_sync(_loop_and_thread)()
        return loop, inner_thread, threading.get_ident()

    async def scenario() -> bool:
        loop, inner_thread, outer_thread = await sync_to_async(sync_side)()
        # The coroutine ran on this loop; its thread-sensitive call came back to
        # the thread that runs the sync code.
        return loop is asyncio.get_running_loop() and inner_thread == outer_thread

    # The inner call goes to async_to_sync's own executor, on that thread.
    assert routed(scenario, asgiref_hops_when_lean=1)


def _cancel_inside_async_to_sync(*, swallow: bool) -> Scenario:
    """A scenario: cancel a call while its sync code waits in ``async_to_sync`` for a
    coroutine on the loop, which ends cancelled, or swallows the cancellation."""
    inner_started = threading.Event()
    seen: list[str] = []

    async def inner() -> str:
        inner_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("inner cancelled")
            if not swallow:
                raise
        return "inner returned"

    def sync_side() -> str:
        return "sync code got " + async_to_sync(inner)()

    async def scenario() -> list[str]:
        task = asyncio.create_task(sync_to_async(sync_side)())
        # Set once async_to_sync's task for inner() runs: asgiref knows it by then.
        await asyncio.to_thread(inner_started.wait, 10)
        task.cancel()
        try:
            outcome = await task
        except asyncio.CancelledError:
            outcome = "cancelled"
        return [outcome, *seen]

    return scenario


def test_cancelling_reaches_the_coroutine_async_to_sync_runs(
    routed: Callable[[Scenario], Any],
) -> None:
    assert routed(_cancel_inside_async_to_sync(swallow=False)) == [
        "cancelled",
        "inner cancelled",
    ]


def test_a_coroutine_that_swallows_the_cancellation_lets_the_call_return() -> None:
    """The sync code goes on, and the call returns what it returned. (asgiref's own path
    may also end cancelled here, when the sync code's end reaches the loop first.)"""

    async def main() -> list[str]:
        routing = enter_routing(db_thread())
        try:
            return await _cancel_inside_async_to_sync(swallow=True)()
        finally:
            exit_routing(routing)

    assert asyncio.run(main()) == ["sync code got inner returned", "inner cancelled"]


def test_a_task_that_outlived_its_routing_gets_asgirefs_error(
    routed: Callable[[Scenario], Any],
) -> None:
    async def scenario() -> str:
        routing = SyncToAsync.thread_sensitive_context.get()
        executor = SyncToAsync.context_to_thread_executor[routing]
        async with ThreadSensitiveContext(executor=executor):
            context = contextvars.copy_context()
        try:
            await asyncio.create_task(sync_to_async(int)(), context=context)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert routed(scenario, hops=False).startswith("ThreadSensitiveContext has exited.")


def test_a_task_in_a_context_of_its_own_is_routed_by_its_loop() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        route_loop(loop, db_thread())
        try:
            return await asyncio.create_task(
                sync_to_async(threading.get_ident)(), context=contextvars.Context()
            )
        finally:
            unroute_loop(loop)

    assert asyncio.run(scenario()) == db_thread().thread.ident


def test_the_orm_in_a_test_takes_the_lean_hop() -> None:
    handled = _count_asgiref_hops()

    class Counted(AsyncTestCase):
        async def test_it(self) -> None:
            await Item.objects.acreate(name="one")
            self.assertEqual(await Item.objects.acount(), 1)

    assert_passed(run_case(Counted), 1)
    assert handled() == 0
