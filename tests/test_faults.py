"""Faults in every hook: reported as unittest reports them, rolled back, never poisoning the next.

Each case has a faulty first test and a clean second one. The fault (an
exception, a cancellation, a hang past the timeout, a skipTest) is put in
one hook of the first test, sync or async; afterwards the result must say
what unittest says for it, the second test must start clean, and no row may
survive, as read from the test's own thread's connection.
"""

from __future__ import annotations

import asyncio
import threading
import unittest
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from djasynctest import AsyncTestCase, _diagnostics
from djasynctest._dbthread import db_thread
from tests.testapp.models import Item, Order
from tests.utils import hang_in_a_query, leftover_rows, problems_by_test, run_case

FAULTS = ["raises", "cancelled", "times out", "skips"]
ASYNC_HOOKS = ["setUp", "asyncSetUp", "test", "asyncTearDown", "tearDown", "cleanup"]
SYNC_HOOKS = ["setUp", "test", "tearDown", "cleanup"]
CASES = [
    pytest.param(hook, flavour, fault, id=f"{flavour} {hook} {fault}")
    for flavour, hooks in (("async", ASYNC_HOOKS), ("sync", SYNC_HOOKS))
    for hook in hooks
    for fault in FAULTS
    if not (flavour == "sync" and fault == "cancelled")
]


async def async_fault(case: unittest.TestCase, fault: str) -> None:
    if fault == "raises":
        raise ValueError("boom")
    if fault == "cancelled":
        raise asyncio.CancelledError
    if fault == "times out":
        await asyncio.Event().wait()
    case.skipTest("skipped on purpose")


def sync_fault(case: unittest.TestCase, fault: str) -> None:
    if fault == "raises":
        raise ValueError("boom")
    if fault == "times out":
        hang_in_a_query()
    case.skipTest("skipped on purpose")


def faulty_case(hook: str, flavour: str, fault: str, seen: list[int]) -> type[AsyncTestCase]:
    def here(case: unittest.TestCase, name: str) -> bool:
        return name == hook and case._testMethodName == "test_1_faulty"

    attrs: dict[str, Any]
    if flavour == "async":

        async def fault_in(case: unittest.TestCase, name: str) -> None:
            if here(case, name):
                await async_fault(case, fault)

        async def setUp(self: Any) -> None:
            await Item.objects.acreate(name="setup")
            self.addAsyncCleanup(self.cleanup)
            await fault_in(self, "setUp")

        async def asyncSetUp(self: Any) -> None:
            await fault_in(self, "asyncSetUp")

        async def test_1_faulty(self: Any) -> None:
            await Item.objects.acreate(name="test")
            await fault_in(self, "test")

        async def asyncTearDown(self: Any) -> None:
            await Order.objects.acreate(item=await Item.objects.aget(name="setup"))
            await fault_in(self, "asyncTearDown")

        async def tearDown(self: Any) -> None:
            await fault_in(self, "tearDown")

        async def cleanup(self: Any) -> None:
            await fault_in(self, "cleanup")

        attrs = {
            "setUp": setUp,
            "asyncSetUp": asyncSetUp,
            "test_1_faulty": test_1_faulty,
            "asyncTearDown": asyncTearDown,
            "tearDown": tearDown,
            "cleanup": cleanup,
        }
    else:

        def sync_fault_in(case: unittest.TestCase, name: str) -> None:
            if here(case, name):
                sync_fault(case, fault)

        def sync_setUp(self: Any) -> None:
            Item.objects.create(name="setup")
            self.addCleanup(self.cleanup)
            sync_fault_in(self, "setUp")

        def sync_test(self: Any) -> None:
            Item.objects.create(name="test")
            sync_fault_in(self, "test")

        def sync_tearDown(self: Any) -> None:
            Order.objects.create(item=Item.objects.get(name="setup"))
            sync_fault_in(self, "tearDown")

        def sync_cleanup(self: Any) -> None:
            sync_fault_in(self, "cleanup")

        attrs = {
            "setUp": sync_setUp,
            "test_1_faulty": sync_test,
            "tearDown": sync_tearDown,
            "cleanup": sync_cleanup,
        }

    async def test_2_clean(self: Any) -> None:
        seen.append(await Item.objects.acount())

    attrs.update(__module__=__name__, timeout=0.5, test_2_clean=test_2_clean)
    return type("Faulty", (AsyncTestCase,), attrs)


@pytest.mark.parametrize(("hook", "flavour", "fault"), CASES)
def test_fault_is_reported_as_unittest_would_and_rolled_back(
    hook: str, flavour: str, fault: str
) -> None:
    seen: list[int] = []
    result = run_case(faulty_case(hook, flavour, fault, seen))

    assert result.testsRun == 2
    outcome = {
        "errors": [(case.id(), text) for case, text in result.errors],
        "failures": [(case.id(), text) for case, text in result.failures],
        "skipped": [(case.id(), reason) for case, reason in result.skipped],
    }
    expected_kind = {
        "raises": "errors",
        "cancelled": "errors",
        "times out": "failures",
        "skips": "skipped",
    }[fault]
    if (flavour, hook, fault) == ("sync", "test", "times out") and (
        connections["default"].vendor == "postgresql"
    ):
        # PostgreSQL aborts the transaction of an interrupted query, so the
        # tearDown's query fails too, as after any failed query in a Django test.
        [(_, text)] = outcome["errors"]
        assert "current transaction is aborted" in text
        outcome["errors"] = []
    for kind, entries in outcome.items():
        assert len(entries) == (kind == expected_kind), (kind, entries)
    [(test_id, text)] = outcome[expected_kind]
    assert test_id.endswith("test_1_faulty")
    if fault == "raises":
        # The user's traceback, down to the line that raised, without ours.
        assert 'in async_fault\n    raise ValueError("boom")' in text or (
            'in sync_fault\n    raise ValueError("boom")' in text
        ), text
        assert "djasynctest/_" not in text, text
    elif fault == "cancelled":
        assert "CancelledError" in text
    elif fault == "times out":
        assert "TestTimeout: test_1_faulty" in text
    else:
        assert text == "skipped on purpose"

    assert seen == [1], "the next test must start clean"
    assert leftover_rows() == {"items": [], "orders": 0}


# --- Class-level hooks --------------------------------------------------------------

CLASS_CASES = [
    ("setUpClass", "raises"),
    ("setUpClass", "times out"),
    ("setUpClass", "skips"),
    ("setUpTestData", "raises"),
    ("setUpTestData", "times out"),
    ("setUpTestData", "skips"),
    ("async setUpTestData", "raises"),
    ("async setUpTestData", "cancelled"),
    ("async setUpTestData", "times out"),
    ("async setUpTestData", "skips"),
    ("asyncSetUpClass", "raises"),
    ("asyncSetUpClass", "cancelled"),
    ("asyncSetUpClass", "times out"),
    ("asyncSetUpClass", "skips"),
    ("asyncTearDownClass", "raises"),
    ("asyncTearDownClass", "cancelled"),
    ("asyncTearDownClass", "times out"),
    ("asyncTearDownClass", "skips"),
    ("tearDownClass", "raises"),
    ("tearDownClass", "skips"),
    ("class cleanup", "raises"),
]


def class_fault(fault: str) -> None:
    if fault == "raises":
        raise ValueError("boom")
    if fault == "cancelled":
        raise asyncio.CancelledError
    if fault == "times out":
        hang_in_a_query()
    raise unittest.SkipTest("skipped on purpose")


async def async_class_fault(fault: str) -> None:
    if fault == "times out":
        await asyncio.Event().wait()
    class_fault(fault)


def faulty_class(hook: str, fault: str, ran: list[str]) -> type[AsyncTestCase]:
    class FaultyClass(AsyncTestCase):
        loop_scope = "class"
        timeout = 0.5

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            Item.objects.create(name="setUpClass")
            cls.addClassCleanup(cls.class_cleanup)
            if hook == "setUpClass":
                class_fault(fault)

        @classmethod
        def class_cleanup(cls) -> None:
            if hook == "class cleanup":
                class_fault(fault)

        @classmethod
        async def asyncSetUpClass(cls) -> None:
            await Item.objects.acreate(name="asyncSetUpClass")
            if hook == "asyncSetUpClass":
                await async_class_fault(fault)

        async def test_it(self) -> None:
            ran.append("test_it")
            await Item.objects.acreate(name="test")

        @classmethod
        async def asyncTearDownClass(cls) -> None:
            await Item.objects.acreate(name="asyncTearDownClass")
            if hook == "asyncTearDownClass":
                await async_class_fault(fault)

        @classmethod
        def tearDownClass(cls) -> None:
            try:
                Item.objects.create(name="tearDownClass")
                if hook == "tearDownClass":
                    class_fault(fault)
            finally:
                super().tearDownClass()

    if hook == "async setUpTestData":

        async def set_up_test_data(cls: Any) -> None:
            await Item.objects.acreate(name="setUpTestData")
            await async_class_fault(fault)

        return type("FaultyClass", (FaultyClass,), {"setUpTestData": classmethod(set_up_test_data)})
    if hook == "setUpTestData":

        def sync_set_up_test_data(cls: Any) -> None:
            Item.objects.create(name="setUpTestData")
            class_fault(fault)

        return type(
            "FaultyClass", (FaultyClass,), {"setUpTestData": classmethod(sync_set_up_test_data)}
        )
    return FaultyClass


class CleanAfterwards(AsyncTestCase):
    seen: list[int] = []

    async def test_sees_no_rows(self) -> None:
        self.seen.append(await Item.objects.acount())


def run_then_a_clean_class(*tests: unittest.TestCase | unittest.TestSuite) -> unittest.TestResult:
    """Run ``tests``, then a class of its own whose test records how many rows it sees."""
    CleanAfterwards.seen = []
    result = unittest.TestResult()
    unittest.TestSuite([*tests, CleanAfterwards("test_sees_no_rows")]).run(result)
    return result


def test_a_class_whose_loop_cannot_be_made_is_rolled_back() -> None:
    """The class's loop is made once it is set up (on the DB thread, with no loop): a
    loop_factory that fails still rolls back setUpTestData's rows and the class atomics."""

    def broken_factory() -> asyncio.AbstractEventLoop:
        raise RuntimeError("no loop today")

    class NoLoop(AsyncTestCase):
        loop_scope = "class"
        loop_factory = staticmethod(broken_factory)

        @classmethod
        def setUpTestData(cls) -> None:
            Item.objects.create(name="class data")

        async def test_it(self) -> None:
            raise AssertionError("must not run")

    result = run_then_a_clean_class(unittest.defaultTestLoader.loadTestsFromTestCase(NoLoop))

    problems = problems_by_test(result)
    assert set(problems) == {"setUpClass"}, problems
    assert "no loop today" in problems["setUpClass"]
    assert CleanAfterwards.seen == [0]
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize(("hook", "fault"), CLASS_CASES, ids=[" ".join(c) for c in CLASS_CASES])
def test_class_level_fault_is_reported_and_the_class_rolled_back(hook: str, fault: str) -> None:
    ran: list[str] = []
    faulty = faulty_class(hook, fault, ran)
    result = run_then_a_clean_class(unittest.defaultTestLoader.loadTestsFromTestCase(faulty))

    set_up_fails = hook in ("setUpClass", "setUpTestData", "async setUpTestData", "asyncSetUpClass")
    assert ran == ([] if set_up_fails else ["test_it"])
    problems = [(str(case), text) for case, text in result.errors + result.failures]
    skipped = [(str(case), reason) for case, reason in result.skipped]
    if fault == "skips":
        assert problems == []
        [(where, reason)] = skipped
        assert reason == "skipped on purpose"
    else:
        assert skipped == []
        [(where, text)] = problems
        expected = {"raises": "ValueError: boom", "cancelled": "CancelledError"}.get(
            fault, "TestTimeout: "
        )
        assert expected in text, text
    phase = "tearDownClass" if not set_up_fails else "setUpClass"
    if hook == "class cleanup":
        phase = "tearDownClass"
    assert where == f"{phase} (tests.test_faults.{faulty.__qualname__})"
    assert CleanAfterwards.seen == [0], "the next class must start clean"
    assert leftover_rows() == {"items": [], "orders": 0}


# --- Bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"fixtures": ["no-such-fixture"]}, "No fixture named 'no-such-fixture' found."),
        ({"fixtures": ["malformed.json"]}, "Problem installing fixture"),
        (
            {"databases": {"default", "nope"}},
            "databases refers to 'nope' which is not defined in settings.DATABASES.",
        ),
    ],
    ids=["missing fixture", "malformed fixture", "unknown database alias"],
)
def test_bad_class_input_fails_the_class_with_the_cause_and_nothing_runs(
    attrs: dict[str, Any], message: str
) -> None:
    ran: list[str] = []

    async def test_it(self: Any) -> None:
        ran.append("test_it")

    Bad = type("Bad", (AsyncTestCase,), {"__module__": __name__, "test_it": test_it, **attrs})
    result = run_then_a_clean_class(Bad("test_it"))
    [(case, text)] = result.errors
    assert str(case) == "setUpClass (tests.test_faults.Bad)"
    assert message in text, text
    assert ran == []
    assert CleanAfterwards.seen == [0]
    assert leftover_rows() == {"items": [], "orders": 0}


# --- The DB thread itself ---------------------------------------------------------------


def test_db_thread_that_stops_fails_its_class_clearly_and_the_next_class_runs() -> None:
    first = db_thread()

    class Stops(AsyncTestCase):
        @classmethod
        def setUpTestData(cls) -> None:
            Item.objects.create(name="class data")

        async def test_it(self) -> None:
            await Item.objects.acreate(name="before the DB thread stopped")
            db_thread().stop(timeout=5)  # as if the thread had died
            await Item.objects.acount()

    result = run_then_a_clean_class(Stops("test_it"))

    assert not first.thread.is_alive()
    assert db_thread() is not first
    failures = [(str(case), text) for case, text in result.errors + result.failures]
    assert all("Stops" in name for name, _ in failures), failures
    test_text = failures[0][1]
    assert "RuntimeError: The djasynctest DB thread has stopped" in test_text
    assert "await Item.objects.acount()" in test_text
    assert "wrapped" not in "".join(text for _, text in failures)
    assert CleanAfterwards.seen == [0]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_a_sync_test_after_the_db_thread_stopped_fails_with_the_cause() -> None:
    class Stops(AsyncTestCase):
        def test_1_stops(self) -> None:
            db_thread().stop(timeout=0)  # as if the thread had died after this test

        def test_2_sync(self) -> None:
            raise AssertionError("must not run")

    result = run_then_a_clean_class(unittest.defaultTestLoader.loadTestsFromTestCase(Stops))

    problems = problems_by_test(result)
    # The first's rollback, and the rest of the class, cannot run: the stopped thread
    # rolled their transactions back as it closed its connections.
    assert set(problems) == {"test_1_stops", "test_2_sync", "tearDownClass"}, problems
    for name in problems:
        assert "RuntimeError: The djasynctest DB thread has stopped" in problems[name]
    assert CleanAfterwards.seen == [0]
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_code_stuck_forever_is_abandoned_with_its_db_thread_and_later_classes_run(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync code that never returns (not a query: nothing to interrupt) cannot hang the run."""
    # The grace a timed-out test gives its DB thread before abandoning it (5 s).
    monkeypatch.setattr(_diagnostics, "_INTERRUPT_GRACE", 0.5)
    release = threading.Event()
    first = db_thread()

    def stuck() -> None:
        Item.objects.create(name="made by the stuck test")
        release.wait()

    class Stuck(AsyncTestCase):
        timeout = 0.5

        @classmethod
        def setUpTestData(cls) -> None:
            Item.objects.create(name="class data")

        if kind == "sync":

            def test_1_stuck(self) -> None:
                stuck()

        else:

            async def test_1_stuck(self) -> None:
                await sync_to_async(stuck)()

        async def asyncTearDown(self) -> None:
            # Waits behind the stuck code until its DB thread is abandoned.
            await Item.objects.acount()

        async def test_2_after(self) -> None:
            raise AssertionError("must not run without the class's data")

    try:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(Stuck)
        result = run_then_a_clean_class(suite)
        assert first.abandoned_by == f"test_1_stuck ({__name__}.{Stuck.__qualname__}.test_1_stuck)"
        assert db_thread() is not first
        problems = problems_by_test(result)
        assert "test_sees_no_rows" not in problems, problems["test_sees_no_rows"]
        assert set(problems) == {"test_1_stuck", "test_2_after", "tearDownClass"}, problems
        assert "TestTimeout: test_1_stuck" in problems["test_1_stuck"]
        assert "release.wait()" in problems["test_1_stuck"]
        for later in ("test_2_after", "tearDownClass"):
            assert (
                f"RuntimeError: The djasynctest DB thread was abandoned when {first.abandoned_by} "
                "ran past its timeout in sync code that never returned"
            ) in problems[later]
        assert CleanAfterwards.seen == [0]
        assert leftover_rows() == {"items": [], "orders": 0}
    finally:
        release.set()
    first.thread.join(5)
    assert not first.thread.is_alive()


@pytest.mark.parametrize("loop_scope", ["test", "class"])
def test_a_sync_set_up_class_that_raises_cancelled_error_fails_its_class(loop_scope: str) -> None:
    """A CancelledError is no Exception: unittest would let it end the whole run."""

    class Cancelled(AsyncTestCase):
        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            Item.objects.create(name="made by setUpClass")
            raise asyncio.CancelledError

        def test_it(self) -> None:
            raise AssertionError("must not run")

    Cancelled.loop_scope = loop_scope  # type: ignore[assignment]
    result = run_then_a_clean_class(unittest.defaultTestLoader.loadTestsFromTestCase(Cancelled))

    problems = problems_by_test(result)
    assert set(problems) == {"setUpClass"}, problems
    assert "was cancelled" in problems["setUpClass"]
    assert CleanAfterwards.seen == [0]
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize("loop_scope", ["test", "class"])
def test_a_set_up_class_stuck_forever_is_abandoned_and_later_classes_run(
    loop_scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_diagnostics, "_INTERRUPT_GRACE", 0.5)
    release = threading.Event()
    first = db_thread()

    class StuckClass(AsyncTestCase):
        timeout = 0.5

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            Item.objects.create(name="made by setUpClass")
            release.wait()

        def test_it(self) -> None:
            raise AssertionError("must not run")

    StuckClass.loop_scope = loop_scope  # type: ignore[assignment]
    try:
        result = run_then_a_clean_class(
            unittest.defaultTestLoader.loadTestsFromTestCase(StuckClass)
        )
        assert first.abandoned_by is not None
        problems = problems_by_test(result)
        assert set(problems) == {"setUpClass"}, problems
        assert "TestTimeout" in problems["setUpClass"]
        assert "release.wait()" in problems["setUpClass"]
        assert CleanAfterwards.seen == [0]
        assert leftover_rows() == {"items": [], "orders": 0}
    finally:
        release.set()
    first.thread.join(5)
    assert not first.thread.is_alive()


def _backend_pid() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid: int = cursor.fetchone()[0]
    return pid


def _terminate(pid: int) -> None:
    """End a backend from an independent connection, as an administrator or a failover would."""
    import psycopg

    settings = connections["default"].settings_dict
    with psycopg.connect(
        dbname="postgres",
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"],
        password=settings["PASSWORD"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.skipif(
    connections["default"].vendor != "postgresql", reason="pg_terminate_backend is PostgreSQL's"
)
def test_terminated_backend_fails_clearly_and_the_next_class_reconnects() -> None:
    class Terminated(AsyncTestCase):
        @classmethod
        def setUpTestData(cls) -> None:
            Item.objects.create(name="class data")

        async def test_1_loses_its_connection(self) -> None:
            await Item.objects.acreate(name="before")
            _terminate(await sync_to_async(_backend_pid)())
            await Item.objects.acount()

        async def test_2_after(self) -> None:
            raise AssertionError("must not run without the class's data")

    result = run_then_a_clean_class(unittest.defaultTestLoader.loadTestsFromTestCase(Terminated))

    errors = {case.id().rsplit(".", 1)[-1]: text for case, text in result.errors}
    assert not result.failures
    assert set(errors) == {"test_1_loses_its_connection", "test_2_after"}, errors
    assert (
        "terminating connection due to administrator command"
        in (errors["test_1_loses_its_connection"])
    )
    assert (
        "RuntimeError: The connection to the database 'default' was lost during "
        f"{__name__}.{Terminated.__qualname__}.test_1_loses_its_connection"
    ) in errors["test_2_after"]
    assert CleanAfterwards.seen == [0], "the next class must get a working connection"
    assert leftover_rows() == {"items": [], "orders": 0}


def _db_thread_connections_open() -> list[str]:
    def still_open() -> list[str]:
        return [
            connection.alias
            for connection in connections.all(initialized_only=True)
            if connection.in_atomic_block
            or (
                connection.connection is not None
                # Django never closes an in-memory SQLite database.
                and not (connection.vendor == "sqlite" and connection.is_in_memory_db())
            )
        ]

    return db_thread().call(still_open)


@pytest.mark.parametrize("hook", ["setUpClass", "asyncSetUpClass", "tearDownClass"])
def test_a_class_that_fails_leaves_no_connection_open(hook: str) -> None:
    # The last class of a run: an open connection would keep the runner from
    # dropping the test database.
    faulty = faulty_class(hook, "raises", [])
    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(faulty).run(result)
    assert len(result.errors) == 1
    assert _db_thread_connections_open() == []


def test_abandoning_a_db_thread_ends_its_own_connections_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a stuck DB thread is abandoned, the next class may start a new one (and
    connect) before the old one's connections are ended: those must be the old's alone."""
    from djasynctest._dbthread import DBThread
    from djasynctest._dbtools import connect_receivers

    connect_receivers()  # as a class's set-up does: connections are registered by thread
    old = db_thread(replace_stopped=True)
    old.call(connections.close_all)
    old.call(Item.objects.count)  # connects
    started: list[DBThread] = []
    abandon = DBThread.abandon

    def abandon_then_a_new_class_starts(self: DBThread, test: str) -> None:
        abandon(self, test)
        new = db_thread(replace_stopped=True)
        new.call(Item.objects.count)  # its own connection, opened at once
        started.append(new)

    monkeypatch.setattr(DBThread, "abandon", abandon_then_a_new_class_starts)
    _diagnostics.abandon_db_thread("a stuck test")
    monkeypatch.undo()

    [new] = started
    assert new is db_thread()
    assert new is not old
    # The new thread's connection was not closed with the old thread's.
    assert new.call(Item.objects.count) == 0
    old.thread.join(5)
    assert not old.thread.is_alive()
