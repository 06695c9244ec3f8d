"""The libraries tests use: freezegun, time-machine, hypothesis, sync decorators."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import hypothesis
import hypothesis.extra.django
import pytest
import time_machine
from freezegun import freeze_time

from djasynctest import AsyncTestCase, AsyncTestMixin
from tests.testapp.models import Item
from tests.utils import assert_passed, leftover_rows, problems, run_case, thread

FROZEN = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "freezer",
    [
        freeze_time(FROZEN),
        freeze_time(FROZEN, tick=True),
        freeze_time(FROZEN, real_asyncio=True),
        time_machine.travel(FROZEN, tick=False),
    ],
    ids=["freezegun", "freezegun tick", "freezegun real_asyncio", "time-machine"],
)
def test_timeout_and_blocking_detector_measure_real_time_under_frozen_time(
    freezer: Callable[[type], type],
) -> None:
    @freezer
    class Frozen(AsyncTestCase):
        timeout = 5

        async def test_frozen(self) -> None:
            await Item.objects.acreate(name="pen")
            self.assertEqual(dt.date.today(), FROZEN.date())

        def test_sync_frozen(self) -> None:
            self.assertEqual(dt.date.today(), FROZEN.date())

        async def test_blocks(self) -> None:
            time.sleep(0.3)

    result = run_case(Frozen)
    assert [case._testMethodName for case, _ in result.failures] == ["test_blocks"]
    held = re.search(r"LoopBlocked: The event loop was blocked for (\S+) s", problems(result)[0])
    assert held is not None
    assert 0.25 <= float(held[1]) < 1  # real seconds, not the frozen clock's
    assert result.errors == []
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize("real_asyncio", [False, True])
def test_timeout_of_a_frozen_test_that_hangs_shows_what_it_waits_for(real_asyncio: bool) -> None:
    @freeze_time(FROZEN, real_asyncio=real_asyncio)
    class Hangs(AsyncTestCase):
        timeout = 0.5

        async def test_waits_forever(self) -> None:
            await asyncio.Event().wait()

    # Under a frozen clock, a timer on the loop would never fire: this would hang.
    [text] = problems(run_case(Hangs))
    assert "TestTimeout: test_waits_forever" in text
    assert "did not finish within its timeout of 0.5 s" in text
    assert re.search(r"in test_waits_forever\n +await asyncio.Event\(\).wait\(\)", text), text


def _sync_decorator(*, keep_result: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A plain decorator, as projects write them: it calls the hook and may drop its result."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            return result if keep_result else None

        return wrapper

    return decorate


def test_async_hooks_behind_freezegun_class_decorator_run_on_the_loop() -> None:
    events: list[tuple[str, str, dt.date]] = []

    @freeze_time(FROZEN)
    class Frozen(AsyncTestCase):
        async def setUp(self) -> None:
            await Item.objects.acreate(name="from setUp")
            events.append(("setUp", thread(), dt.date.today()))

        async def test_sees_the_rows_of_set_up(self) -> None:
            self.assertEqual([i.name async for i in Item.objects.all()], ["from setUp"])
            events.append(("test", thread(), dt.date.today()))

        async def tearDown(self) -> None:
            self.assertEqual(await Item.objects.acount(), 1)
            events.append(("tearDown", thread(), dt.date.today()))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine ... was never awaited"
        assert_passed(run_case(Frozen), 1)
    assert events == [
        ("setUp", "main", FROZEN.date()),
        ("test", "main", FROZEN.date()),
        ("tearDown", "main", FROZEN.date()),
    ]
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize("keep_result", [False, True], ids=["drops", "returns"])
def test_async_hooks_and_tests_behind_a_sync_decorator_run_on_the_loop(keep_result: bool) -> None:
    events: list[tuple[str, str]] = []
    decorator = _sync_decorator(keep_result=keep_result)

    class Decorated(AsyncTestCase):
        @decorator
        async def asyncSetUp(self) -> None:
            await Item.objects.acreate(name="pen")
            events.append(("asyncSetUp", thread()))

        @_sync_decorator(keep_result=True)
        async def test_it(self) -> None:
            self.assertEqual(await Item.objects.acount(), 1)
            events.append(("test", thread()))

        @decorator
        async def asyncTearDown(self) -> None:
            events.append(("asyncTearDown", thread()))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_passed(run_case(Decorated), 1)
    assert events == [("asyncSetUp", "main"), ("test", "main"), ("asyncTearDown", "main")]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_failing_async_hook_behind_a_sync_wrapper_fails_the_test_and_rolls_back() -> None:
    class FailsInSetUp(AsyncTestCase):
        @_sync_decorator(keep_result=False)
        async def setUp(self) -> None:
            await Item.objects.acreate(name="pen")
            raise ValueError("setUp failed")

        async def test_it(self) -> None:
            raise AssertionError("not reached")

    [text] = problems(run_case(FailsInSetUp))
    assert "ValueError: setUp failed" in text
    assert leftover_rows() == {"items": [], "orders": 0}


def test_asyncio_run_in_a_sync_test_works_in_the_tests_transaction() -> None:
    """A sync wrapper around async service code: its loop runs on the DB thread."""

    class SyncWrapper(AsyncTestCase):
        def setUp(self) -> None:
            Item.objects.create(name="pen")

        def test_orm(self) -> None:
            self.assertEqual(asyncio.run(Item.objects.acount()), 1)
            asyncio.run(Item.objects.acreate(name="ink"))
            self.assertEqual(Item.objects.count(), 2)

        def test_async_client(self) -> None:
            response = asyncio.run(self.async_client.get("/items/"))
            self.assertEqual(response.json(), {"items": ["pen"]})

    assert_passed(run_case(SyncWrapper), 2)
    assert leftover_rows() == {"items": [], "orders": 0}


class _AsyncioRunExecutor:
    """Hypothesis's documented executor for async tests: each example in asyncio.run().

    A custom executor replaces setup_example and teardown_example, where
    hypothesis.extra.django rolls each example back: it calls them itself.
    """

    def execute_example(self, f: Callable[[], Any]) -> Any:
        self.setup_example()  # type: ignore[attr-defined]
        try:
            result = f()
            return asyncio.run(result) if asyncio.iscoroutine(result) else result
        finally:
            self.teardown_example(None)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("executor", "async_thread"),
    [((), "main"), ((_AsyncioRunExecutor,), "main")],
    ids=["on the test's loop", "asyncio.run executor"],
)
def test_hypothesis_sync_and_async_examples_each_rolled_back(
    executor: tuple[type, ...], async_thread: str
) -> None:
    """AsyncTestMixin + hypothesis.extra.django.TestCase: each example is rolled back."""
    ran: dict[str, list[str]] = {"sync": [], "async": []}

    class Properties(*executor, AsyncTestMixin, hypothesis.extra.django.TestCase):  # type: ignore[misc]
        @hypothesis.settings(max_examples=5, deadline=None, database=None)
        @hypothesis.given(hypothesis.strategies.integers(min_value=0, max_value=1000))
        def test_sync(self, price: int) -> None:
            Item.objects.create(name="pen", price=price)
            self.assertEqual(Item.objects.count(), 1)
            ran["sync"].append(thread())

        @hypothesis.settings(max_examples=5, deadline=None, database=None)
        @hypothesis.given(hypothesis.strategies.integers(min_value=0, max_value=1000))
        async def test_async(self, price: int) -> None:
            await Item.objects.acreate(name="pen", price=price)
            self.assertEqual(await Item.objects.acount(), 1)
            ran["async"].append(thread())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_passed(run_case(Properties), 2)
    assert set(ran["sync"]) == {"main"}
    assert set(ran["async"]) == {async_thread}
    assert len(ran["sync"]) >= 2
    assert len(ran["async"]) >= 2
    assert leftover_rows() == {"items": [], "orders": 0}
