"""The test case classes: bases, hook order, threads, isolation, errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import re
import threading
import unittest
from typing import Any

import django.db
import django.test
import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.contrib.auth.models import User
from django.core import mail
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

import djasynctest
from djasynctest import (
    AsyncSimpleTestCase,
    AsyncTestCase,
    AsyncTestMixin,
    AsyncTransactionTestCase,
)
from djasynctest._dbthread import db_thread
from djasynctest._loop import SYNC_ORM_HINT
from tests.testapp.models import Item, Order
from tests.utils import assert_passed, leftover_rows, problems, run_case, thread


def test_public_names() -> None:
    assert djasynctest.__all__ == (
        "AsyncLiveServerTestCase",
        "AsyncSimpleTestCase",
        "AsyncTestCase",
        "AsyncTestMixin",
        "AsyncTransactionTestCase",
        "BlockingWarning",
        "LoopBlocked",
        "PendingTaskWarning",
        "TestTimeout",
        "at_loop_close",
    )
    for name in djasynctest.__all__:
        assert getattr(djasynctest, name).__module__.startswith("djasynctest")


@pytest.mark.parametrize(
    ("case_class", "django_class"),
    [
        (AsyncSimpleTestCase, django.test.SimpleTestCase),
        (AsyncTransactionTestCase, django.test.TransactionTestCase),
        (AsyncTestCase, django.test.TestCase),
    ],
)
def test_ready_classes_are_isolated_asyncio_cases(
    case_class: type[AsyncTestMixin], django_class: type[django.test.SimpleTestCase]
) -> None:
    assert issubclass(case_class, unittest.IsolatedAsyncioTestCase)
    assert issubclass(case_class, django_class)
    mro = case_class.__mro__
    # The mixin (with IsolatedAsyncioTestCase) before every Django class.
    assert mro[mro.index(AsyncTestMixin) + 1] is unittest.IsolatedAsyncioTestCase
    assert mro.index(AsyncTestMixin) < min(
        mro.index(klass) for klass in mro if klass.__module__.startswith("django.")
    )


def test_ready_classes_nest_as_djangos_do() -> None:
    """Code that checks the hierarchy by name (pytest-django, override_settings, a suite
    with django.test's names swapped for ours) sees Django's."""
    assert issubclass(AsyncTestCase, AsyncTransactionTestCase)
    assert issubclass(AsyncTransactionTestCase, AsyncSimpleTestCase)
    assert not issubclass(AsyncTransactionTestCase, django.test.TestCase)
    assert not issubclass(AsyncSimpleTestCase, django.test.TransactionTestCase)


def test_wrong_base_order_is_a_type_error_naming_the_right_order() -> None:
    with pytest.raises(TypeError) as info:

        class Wrong(django.test.TestCase, AsyncTestMixin):
            pass

    assert str(info.value) == (
        "AsyncTestMixin must come before TestCase in the bases of "
        "tests.test_case.test_wrong_base_order_is_a_type_error_naming_the_right_order."
        "<locals>.Wrong: class Wrong(AsyncTestMixin, TestCase)."
    )


def test_helper_simple_test_case_before_the_mixin_is_allowed_and_its_class_hooks_run() -> None:
    """As Django's own suite does: class T(OptimizerTestBase, OperationTestBase)."""
    events: list[tuple[str, str]] = []

    class Helpers(django.test.SimpleTestCase):
        @classmethod
        def setUpClass(cls) -> None:
            events.append(("helpers setUpClass", thread()))
            super().setUpClass()
            Item.objects.create(name="class data")

        def assertItems(self, count: int) -> None:
            self.assertEqual(Item.objects.count(), count)

    class UsesHelpers(Helpers, AsyncTestCase):
        def test_sync(self) -> None:
            self.assertItems(1)
            events.append(("test", thread()))

    assert_passed(run_case(UsesHelpers), 1)
    assert events == [("helpers setUpClass", "main"), ("test", "main")]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_class_that_runs_tests_its_own_way_before_the_mixin_is_a_type_error() -> None:
    class OwnRunner(django.test.SimpleTestCase):
        def run(self, result: Any = None) -> Any:
            return super().run(result)

    with pytest.raises(TypeError) as info:

        class Wrong(OwnRunner, AsyncTestCase):
            pass

    assert str(info.value).startswith("AsyncTestMixin must come before ")
    assert "OwnRunner in the bases of" in str(info.value)


def test_mixin_without_django_case_is_a_type_error() -> None:
    with pytest.raises(TypeError) as info:

        class Lonely(AsyncTestMixin):
            pass

    assert str(info.value) == (
        "tests.test_case.test_mixin_without_django_case_is_a_type_error.<locals>.Lonely "
        "has AsyncTestMixin but no Django test case: add one "
        "after it, as in class Lonely(AsyncTestMixin, django.test.TestCase), or "
        "subclass djasynctest.AsyncTestCase."
    )


def test_async_set_up_class_is_a_type_error() -> None:
    with pytest.raises(TypeError) as info:

        class AsyncClassSetUp(AsyncTestCase):
            @classmethod
            async def setUpClass(cls) -> None:
                pass

    assert str(info.value) == (
        "tests.test_case.test_async_set_up_class_is_a_type_error.<locals>.AsyncClassSetUp."
        "setUpClass is async, but unittest calls "
        "setUpClass synchronously: make it a plain classmethod (the sync ORM works "
        "there, in the class's transaction)."
    )


def _sync_instance_method(self: object) -> None:
    pass


async def _async_instance_method(self: object) -> None:
    pass


@pytest.mark.parametrize("method", [_sync_instance_method, _async_instance_method])
def test_set_up_test_data_must_be_a_classmethod(method: object) -> None:
    with pytest.raises(TypeError) as info:
        type("Forgot", (AsyncTestCase,), {"__module__": __name__, "setUpTestData": method})
    assert str(info.value) == (
        "tests.test_case.Forgot.setUpTestData must be a classmethod: Django calls it once for "
        "the class. Add @classmethod above it, and name its first argument cls."
    )


def _recording_case(*bases: type) -> type[unittest.TestCase]:
    """A case that records each hook with the thread it ran on, all async."""

    class Recording(*bases):  # type: ignore[misc]
        events: list[tuple[str, str]] = []

        @classmethod
        def setUpClass(cls) -> None:
            cls.events.append(("setUpClass", thread()))
            super().setUpClass()

        @classmethod
        async def setUpTestData(cls) -> None:
            cls.events.append(("setUpTestData", thread()))
            cls.item = await Item.objects.acreate(name="class-item")

        async def setUp(self) -> None:
            self.events.append(("setUp", thread()))
            self.addAsyncCleanup(self.cleanup_async)
            self.addCleanup(self.cleanup_sync)

        async def asyncSetUp(self) -> None:
            self.events.append(("asyncSetUp", thread()))

        async def test_it(self) -> None:
            self.events.append(("test", thread()))
            await Order.objects.acreate(item=self.item)

        def test_sync(self) -> None:
            self.events.append(("test_sync", thread()))
            Order.objects.create(item=self.item)

        async def asyncTearDown(self) -> None:
            self.events.append(("asyncTearDown", thread()))

        async def tearDown(self) -> None:
            self.events.append(("tearDown", thread()))

        async def cleanup_async(self) -> None:
            self.events.append(("cleanup_async", thread()))

        def cleanup_sync(self) -> None:
            self.events.append(("cleanup_sync", thread()))

        @classmethod
        def _pre_setup(cls) -> None:
            cls.events.append(("pre_setup", thread()))
            super()._pre_setup()

        def _post_teardown(self) -> None:
            self.events.append(("rollback", thread()))
            super()._post_teardown()

        @classmethod
        def tearDownClass(cls) -> None:
            cls.events.append(("tearDownClass", thread()))
            super().tearDownClass()

    return Recording


PER_TEST = [
    ("setUp", "main"),
    ("asyncSetUp", "main"),
    "test",
    ("asyncTearDown", "main"),
    ("tearDown", "main"),
    ("cleanup_sync", "main"),
    ("cleanup_async", "main"),
    ("rollback", "main"),
]


@pytest.mark.parametrize(
    "bases",
    [
        (AsyncTestCase,),
        (AsyncTestMixin, django.test.TestCase),
        (AsyncTestMixin, unittest.IsolatedAsyncioTestCase, django.test.TestCase),
    ],
    ids=["AsyncTestCase", "mixin", "mixin-with-isolated"],
)
def test_hooks_run_in_order_on_their_threads(bases: tuple[type, ...]) -> None:
    case = _recording_case(*bases)
    result = run_case(case, "test_it", "test_sync")
    assert_passed(result, 2)
    expected = [("setUpClass", "main"), ("setUpTestData", "main")]
    for name in ("test", "test_sync"):
        expected.append(("pre_setup", "main"))
        expected += [(name, "main") if step == "test" else step for step in PER_TEST]
    expected.append(("tearDownClass", "main"))
    assert case.events == expected  # type: ignore[attr-defined]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_rows_made_anywhere_are_seen_everywhere_in_the_test_and_gone_after() -> None:
    seen: list[tuple[int, int]] = []

    class Rows(AsyncTestCase):
        @classmethod
        def setUpTestData(cls) -> None:
            cls.item = Item.objects.create(name="sync-class")

        def setUp(self) -> None:
            Item.objects.create(name="sync-setup")

        async def asyncSetUp(self) -> None:
            await Item.objects.acreate(name="async-setup")

        async def test_1(self) -> None:
            await sync_to_async(Item.objects.create)(name="sync-to-async")
            response = await self.async_client.get("/items/")
            names = response.json()["items"]
            seen.append((len(names), await Order.objects.acount()))
            await Order.objects.acreate(item=self.item)

        def test_2(self) -> None:
            seen.append((Item.objects.count(), Order.objects.count()))
            Order.objects.create(item=self.item)

        async def test_3(self) -> None:
            seen.append((await Item.objects.acount(), await Order.objects.acount()))

    assert_passed(run_case(Rows), 3)
    # 4 items in test_1 (class, setUp, asyncSetUp, its own), 3 in the others;
    # the order each test made is gone in the next one.
    assert seen == [(4, 0), (3, 0), (3, 0)]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_sync_code_after_a_cancelled_orm_call_waits_for_it_to_finish() -> None:
    """A sync hook shares the DB thread's connection: a query that a cancelled task
    left running there ends before the hook's first query."""
    started, release = threading.Event(), threading.Event()
    counts: list[int] = []

    def slow_create() -> None:
        started.set()
        release.wait(10)
        for n in range(200):
            Item.objects.create(name=f"made after the task was cancelled {n}")

    class Cancelled(AsyncTestCase):
        async def test_it(self) -> None:
            task = asyncio.create_task(sync_to_async(slow_create)())
            while not started.is_set():  # until the DB thread runs it
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            release.set()  # it goes on there, as the test ends

        def tearDown(self) -> None:
            counts.append(Item.objects.count())

    assert_passed(run_case(Cancelled), 1)
    assert counts == [200]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_the_shared_connections_keep_djangos_thread_checks() -> None:
    """The DB thread's connection objects, lent to the test's thread, may be used there and
    on the DB thread, and on no other thread; their thread-sharing count stays the user's
    (as Django's own backends.tests.ThreadTests check, swapped)."""
    errors: list[Exception] = []

    class Threads(AsyncTestCase):
        def test_1_sharing_count(self) -> None:
            connection = connections["default"]
            self.assertIs(connection.allow_thread_sharing, False)
            connection.inc_thread_sharing()
            connection.dec_thread_sharing()
            with self.assertRaisesMessage(RuntimeError, "below zero"):
                connection.dec_thread_sharing()

        def test_2_another_thread_cannot_use_it(self) -> None:
            connection = connections["default"]

            def use() -> None:
                try:
                    connection.cursor()
                except Exception as exc:
                    errors.append(exc)

            other = threading.Thread(target=use)
            other.start()
            other.join(10)
            Item.objects.create(name="sync")

        async def test_3_both_threads_still_can(self) -> None:
            await Item.objects.acreate(name="async")
            self.assertEqual(await Item.objects.acount(), 1)

    assert_passed(run_case(Threads), 3)
    [error] = errors
    assert isinstance(error, django.db.DatabaseError)
    assert "can only be used in that same thread" in str(error)
    assert leftover_rows() == {"items": [], "orders": 0}


def test_class_data_is_deep_copied_per_test() -> None:
    names: list[str] = []

    class Copies(AsyncTestCase):
        @classmethod
        async def setUpTestData(cls) -> None:
            cls.item = await Item.objects.acreate(name="original")

        async def test_1(self) -> None:
            names.append(self.item.name)
            self.item.name = "changed"

        async def test_2(self) -> None:
            names.append(self.item.name)

    assert_passed(run_case(Copies), 2)
    assert names == ["original", "original"]


def test_subclass_awaits_parent_async_set_up_test_data() -> None:
    class Parent(AsyncTestCase):
        @classmethod
        async def setUpTestData(cls) -> None:
            cls.parent = await Item.objects.acreate(name="parent")

    class Child(Parent):
        @classmethod
        async def setUpTestData(cls) -> None:
            await super().setUpTestData()
            cls.child = await Item.objects.acreate(name="child", price=cls.parent.pk)

        async def test_both(self) -> None:
            self.assertEqual(await Item.objects.acount(), 2)
            self.assertEqual(self.child.price, self.parent.pk)

    assert_passed(run_case(Child), 1)


def test_fixtures_are_loaded_for_each_test() -> None:
    counts: list[int] = []

    class WithFixtures(AsyncTestCase):
        fixtures = ["items.json"]

        async def test_1(self) -> None:
            item = await Item.objects.aget(pk=100)
            counts.append(item.price)
            await item.adelete()

        async def test_2(self) -> None:
            counts.append(await Item.objects.filter(name="fixture-ink").acount())

    assert_passed(run_case(WithFixtures), 2)
    assert counts == [3, 1]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_clients_are_fresh_per_test_and_logins_work() -> None:
    seen: list[object] = []

    class Clients(AsyncTestCase):
        async def setUp(self) -> None:
            self.user = await User.objects.acreate(username="user")
            self.user.set_password("secret")
            await self.user.asave()
            seen.append((self.client, self.async_client))

        async def test_force_login(self) -> None:
            await self.async_client.aforce_login(self.user)
            response = await self.async_client.get("/orders/")
            self.assertEqual(response.status_code, 200)
            await self.async_client.alogout()
            response = await self.async_client.get("/orders/")
            self.assertEqual(response.status_code, 302)

        async def test_login(self) -> None:
            self.assertTrue(await self.async_client.alogin(username="user", password="secret"))
            item = await Item.objects.acreate(name="pen")
            response = await self.async_client.post("/orders/", {"item": item.pk})
            self.assertEqual(response.status_code, 201)
            self.assertEqual(await Order.objects.filter(user=self.user).acount(), 1)

        def test_sync_client(self) -> None:
            self.client.force_login(self.user)
            self.assertEqual(self.client.get("/orders/").json(), {"orders": 0})

    assert_passed(run_case(Clients), 3)
    assert len({id(pair[0]) for pair in seen}) == 3
    assert len({id(pair[1]) for pair in seen}) == 3
    assert User.objects.count() == 0
    from django.contrib.sessions.models import Session

    assert Session.objects.count() == 0


def test_sync_orm_in_async_test_gets_django_error_with_hint() -> None:
    class SyncOrm(AsyncTestCase):
        async def test_it(self) -> None:
            Item.objects.count()

    result = run_case(SyncOrm)
    [text] = problems(result)
    assert "SynchronousOnlyOperation: You cannot call this from an async context" in text
    assert text.rstrip().endswith(SYNC_ORM_HINT)


def test_sync_orm_hint_is_a_note_on_the_original_exception() -> None:
    class SyncOrm(AsyncTestCase):
        async def test_it(self) -> None:
            Item.objects.count()

    with pytest.raises(SynchronousOnlyOperation) as info:
        SyncOrm("test_it").debug()
    assert info.value.__notes__ == [SYNC_ORM_HINT]


def test_simple_test_case_refuses_queries_from_async_code() -> None:
    class NoDatabase(AsyncSimpleTestCase):
        async def test_async(self) -> None:
            await Item.objects.acount()

        def test_sync(self) -> None:
            Item.objects.count()

    result = run_case(NoDatabase)
    texts = problems(result)
    assert len(texts) == 2
    for text in texts:
        assert "Database queries to 'default' are not allowed in SimpleTestCase subclasses" in text


def test_debug_raises_and_still_rolls_back() -> None:
    class Debugged(AsyncTestCase):
        async def test_it(self) -> None:
            await Item.objects.acreate(name="debug")
            raise ValueError("in debug")

    Debugged.setUpClass()
    try:
        with pytest.raises(ValueError, match="in debug"):
            Debugged("test_it").debug()
    finally:
        Debugged.tearDownClass()
        Debugged.doClassCleanups()
    assert leftover_rows() == {"items": [], "orders": 0}


def test_failing_set_up_test_data_rolls_back_the_class() -> None:
    class BadClassData(AsyncTestCase):
        @classmethod
        async def setUpTestData(cls) -> None:
            await Item.objects.acreate(name="half-made")
            raise ValueError("class data")

        async def test_never_runs(self) -> None:
            raise AssertionError("unreachable")

    result = run_case(BadClassData)
    [(case, text)] = result.errors
    assert "setUpClass" in str(case)
    assert "ValueError: class data" in text
    assert leftover_rows() == {"items": [], "orders": 0}


def test_hundred_async_tests_in_a_row_are_isolated() -> None:
    counts: list[int] = []

    async def body(self: AsyncTestCase) -> None:
        await Item.objects.acreate(name="same-name-every-time")
        counts.append(await Item.objects.acount())

    methods = {f"test_{i:03}": body for i in range(100)}
    Many = type("Many", (AsyncTestCase,), {"__module__": __name__, **methods})
    assert_passed(run_case(Many), 100)
    assert counts == [1] * 100


def _db_thread_in_transaction() -> bool:
    return db_thread().call(lambda: any(c.in_atomic_block for c in connections.all()))


@pytest.mark.parametrize("base", [AsyncTestCase, AsyncSimpleTestCase])
def test_each_test_is_set_up_once_and_nothing_stays_open(base: type) -> None:
    # The DB thread sets the next test up right after a rollback; a skipped
    # test, the end of the class or a test run on its own must not leave that
    # setup (a per-test transaction) behind.
    set_ups: list[str] = []

    class Sequence(base):  # type: ignore[valid-type,misc]
        databases = {"default"} if base is AsyncTestCase else set()

        @classmethod
        def _pre_setup(cls) -> None:
            set_ups.append("pre_setup")
            super()._pre_setup()

        def _post_teardown(self) -> None:
            set_ups.append("post_teardown")
            super()._post_teardown()

        async def test_1(self) -> None:
            mail.send_mail("one", "body", "from@example.com", ["to@example.com"])
            self.client.cookies["seen"] = "1"

        @unittest.skip("skipped on purpose")
        async def test_2_skipped(self) -> None:
            raise AssertionError("unreachable")

        async def test_3(self) -> None:
            self.assertEqual(mail.outbox, [])
            self.assertNotIn("seen", self.client.cookies)

        @unittest.skip("skipped on purpose")
        async def test_4_skipped(self) -> None:
            raise AssertionError("unreachable")

    result = run_case(Sequence)
    assert_passed(result, 4, skipped=2)
    assert set_ups.count("pre_setup") == set_ups.count("post_teardown")
    assert not _db_thread_in_transaction()
    set_ups.clear()
    Sequence("test_1").debug()
    assert set_ups == ["pre_setup", "post_teardown"]
    assert not _db_thread_in_transaction()


@pytest.mark.skipif(
    os.environ.get("DJASYNCTEST_DB") == "postgres",
    reason="the table lock is SQLite's; on PostgreSQL the naive mix leaks rows instead",
)
def test_naive_mix_of_test_case_and_isolated_asyncio_fails() -> None:
    """The problem the library solves: Django's atomics and the async ORM on different threads."""

    @classmethod  # type: ignore[misc]
    def set_up_test_data(cls: type) -> None:
        Item.objects.create(name="class-data")

    async def async_set_up(self: unittest.TestCase) -> None:
        await Item.objects.acreate(name=self._testMethodName)

    async def test(self: unittest.TestCase) -> None:
        self.assertEqual(await Item.objects.acount(), 2)

    attrs = {
        "__module__": __name__,
        "setUpTestData": set_up_test_data,
        "asyncSetUp": async_set_up,
        "test_1": test,
        "test_2": test,
    }
    Naive = type("Naive", (unittest.IsolatedAsyncioTestCase, django.test.TestCase), attrs)
    texts = problems(run_case(Naive))
    # The naive mix left connections open on asgiref's own thread; close them
    # (SQLite's close() spares in-memory databases, the base class's does not).
    SyncToAsync.single_thread_executor.submit(
        lambda: [BaseDatabaseWrapper.close(conn) for conn in connections.all()]
    ).result()
    assert texts
    # In memory: "database table is locked"; in a file: "database is locked".
    assert all(re.search("database (table )?is locked", text) for text in texts)
    Ours = type("Ours", (AsyncTestCase,), attrs)
    assert_passed(run_case(Ours), 2)


def test_transaction_test_case_flushes_after_each_test() -> None:
    counts: list[int] = []

    class Flushing(AsyncTransactionTestCase):
        async def test_1(self) -> None:
            await Item.objects.acreate(name="committed")
            counts.append(await Item.objects.acount())

        def test_2(self) -> None:
            counts.append(Item.objects.count())

    assert_passed(run_case(Flushing), 2)
    assert counts == [1, 0]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_both_databases_are_rolled_back() -> None:
    class TwoDatabases(AsyncTestCase):
        databases = {"default", "other"}

        async def test_it(self) -> None:
            await Item.objects.acreate(name="default")
            await Item.objects.using("other").acreate(name="other")
            self.assertEqual(await Item.objects.using("other").acount(), 1)

    assert_passed(run_case(TwoDatabases), 1)
    assert Item.objects.using("other").count() == 0
    assert leftover_rows() == {"items": [], "orders": 0}


class _Picklable(AsyncTestCase):
    __test__ = False  # run by the test below, not collected on its own

    async def test_it(self) -> None:
        pass


def test_instances_pickle_for_parallel_runners() -> None:
    case = pickle.loads(pickle.dumps(_Picklable("test_it")))
    assert case._testMethodName == "test_it"
    result = unittest.TestResult()
    unittest.TestSuite([case]).run(result)
    assert_passed(result, 1)


def test_case_run_from_inside_a_sync_test() -> None:
    """Django's own suite runs test cases inside its tests; that starts on the DB thread."""
    inner_counts: list[int] = []

    class Inner(AsyncTestCase):
        @classmethod
        async def setUpTestData(cls) -> None:
            await Item.objects.acreate(name="inner-class")

        async def test_async(self) -> None:
            await Item.objects.acreate(name="inner-test")
            inner_counts.append(await Item.objects.acount())

        def test_sync(self) -> None:
            inner_counts.append(Item.objects.count())

    class Outer(AsyncTestCase):
        def test_runs_inner(self) -> None:
            Item.objects.create(name="outer")
            result = run_case(Inner)
            # (Inner's tearDownClass closed the connections, as Django's does.)
            self.assertEqual(problems(result), [])
            self.assertEqual(result.testsRun, 2)

    assert_passed(run_case(Outer), 1)
    assert inner_counts == [3, 2]
    assert leftover_rows() == {"items": [], "orders": 0}
