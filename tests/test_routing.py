"""Thread-sensitive calls from a test's event loop reach the DB thread, and only while it runs."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

from djasynctest import AsyncTestCase
from djasynctest._diagnostics import PendingTaskWarning
from tests import children
from tests.testapp.models import Item
from tests.utils import assert_passed, run_case, thread


def test_thread_sensitive_calls_run_on_the_db_thread() -> None:
    seen: list[str] = []

    class Routed(AsyncTestCase):
        async def test_it(self) -> None:
            seen.append(await sync_to_async(thread)())
            # Tasks of the test inherit its context, and with it the route.
            seen.append(await asyncio.create_task(sync_to_async(thread)()))
            # A request handler's own ThreadSensitiveContext nests inside ours.
            async with ThreadSensitiveContext():
                seen.append(await sync_to_async(thread)())
            # Not thread-sensitive: asgiref's thread pool, as in production.
            seen.append(await sync_to_async(thread, thread_sensitive=False)())

    assert_passed(run_case(Routed), 1)
    assert seen[:3] == ["db", "db", "db"]
    assert seen[3] not in ("db", "main")


def test_task_outliving_its_test_cannot_write_into_the_next_one() -> None:
    """With a loop per test, its leftover tasks are cancelled; their ORM calls must fail."""
    outcome: list[str] = []

    class Leaky(AsyncTestCase):
        async def test_leaves_a_task(self) -> None:
            async def late_write() -> None:
                try:
                    await asyncio.Event().wait()
                finally:
                    try:
                        await Item.objects.acreate(name="late")
                    except RuntimeError as exc:
                        outcome.append(str(exc))

            self.task = asyncio.create_task(late_write())
            await asyncio.sleep(0)

        async def test_next(self) -> None:
            outcome.append(f"items: {await Item.objects.acount()}")

    with pytest.warns(PendingTaskWarning, match="late_write"):
        result = run_case(Leaky)
    assert_passed(result, 2)
    assert outcome[0].startswith("ThreadSensitiveContext has exited.")
    assert outcome[1] == "items: 0"


@pytest.mark.timeout(60)
def test_sync_code_after_async_code_can_use_async_to_sync() -> None:
    """asgiref remembers the loop that last called the DB thread; a sync hook must not use it.

    The loop is idle (not closed) while a sync cleanup runs on the DB thread, so
    sending the coroutine there would wait forever.
    """
    seen: list[str] = []

    async def where() -> str:
        return thread()

    class Mixed(AsyncTestCase):
        async def test_it(self) -> None:
            await Item.objects.acount()
            self.addCleanup(lambda: seen.append(async_to_sync(where)()))

    assert_passed(run_case(Mixed), 1)
    assert seen
    assert seen[0] not in ("db", "main")


def test_sync_hook_calling_async_to_sync_reaches_db_thread_for_orm() -> None:
    counts: list[int] = []

    async def count() -> int:
        return await Item.objects.acount()

    class SyncHook(AsyncTestCase):
        def setUp(self) -> None:
            Item.objects.create(name="sync")
            counts.append(async_to_sync(count)())

        async def test_it(self) -> None:
            counts.append(await Item.objects.acount())

    assert_passed(run_case(SyncHook), 1)
    assert counts == [1, 1]


@pytest.mark.parametrize(("timeout", "forks_on"), [(None, "MainThread"), (60.0, "djasynctest-db")])
def test_a_process_forked_from_a_class_hook_starts_with_no_routing(
    timeout: float | None, forks_on: str
) -> None:
    """A server a sync setUpClass forks (on the test's thread; on the DB thread with a
    timeout) is no DB thread of ours, and routes nothing to one: its thread-sensitive
    calls, and async_to_sync inside them, run as without djasynctest."""
    # asgiref's process-wide thread, started before the fork as in any longer run: the
    # child inherits its executor, but not the thread.
    asyncio.run(sync_to_async(thread)())
    seen: list[object] = []

    class ForksAServer(AsyncTestCase):
        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            # It deadlocked, before.
            seen.append(children.from_a_child("fork", children.serve_in_a_child))

        async def test_it(self) -> None:
            seen.append(await sync_to_async(thread)())

    ForksAServer.timeout = timeout  # type: ignore[misc]
    assert_passed(run_case(ForksAServer), 1)
    [(forked_on, is_db_thread, (served_on, sent)), here] = seen
    assert (forked_on, is_db_thread) == (forks_on, False)
    assert served_on != "djasynctest-db"
    assert sent == "sent"
    assert here == "db"
