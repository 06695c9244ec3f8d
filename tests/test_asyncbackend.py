"""django-async-backend's connections inside the test's transaction (src/djasynctest/_asyncbackend).

Runs with ``DJASYNCTEST_DB=postgres-async-backend`` (``nox -s asyncbackend``):
the project's engine is django-async-backend's, whose app patches every model
with its ``async_objects`` manager.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import IntegrityError, connections

from djasynctest import AsyncTestCase
from tests.dbconfig import BACKEND
from tests.testapp.models import Item, Order
from tests.utils import assert_passed, leftover_rows, run_case

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(
    BACKEND != "postgres-async-backend",
    reason="runs with DJASYNCTEST_DB=postgres-async-backend (nox -s asyncbackend)",
)

if BACKEND == "postgres-async-backend":
    from django_async_backend.db import async_connections
    from django_async_backend.db.transaction import async_atomic

# Django's ORM and django-async-backend's, on the same models.
Async: Any = Item


def _server_connections() -> int:
    """Client sessions on the test database but this thread's (autovacuum's are not)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_both_orms_share_the_tests_transaction_and_it_is_rolled_back() -> None:
    seen: list[Any] = []

    class Shared(AsyncTestCase):
        @classmethod
        def setUpTestData(cls) -> None:
            cls.user = User.objects.create(username="owner")
            cls.item = Item.objects.create(name="class item")

        async def asyncSetUp(self) -> None:
            # The async backend's wrapper is made in this task, and used in the test's.
            await Async.async_objects.acreate(name="set up by the async backend")
            await Item.objects.acreate(name="set up by Django")

        async def test_1_writes(self) -> None:
            seen.append(await Async.async_objects.acount())
            # A foreign key to a row of setUpTestData, written by the async backend.
            order = Order(item_id=self.item.pk, user_id=self.user.pk)
            await order.async_save()
            seen.append(await Order.objects.acount())
            names = Async.async_objects.values_list("name", flat=True)
            seen.append(sorted([name async for name in names]))

        async def test_2_sees_none_of_it(self) -> None:
            seen.append(await Async.async_objects.acount())
            seen.append(await Order.async_objects.acount())  # type: ignore[attr-defined]

    assert_passed(run_case(Shared), 2)
    assert seen == [
        3,
        1,
        ["class item", "set up by Django", "set up by the async backend"],
        3,
        0,
    ]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_fixtures_are_seen_and_their_rows_can_be_referenced() -> None:
    seen: list[Any] = []

    class Fixtures(AsyncTestCase):
        fixtures = ["items.json"]

        async def test_it(self) -> None:
            seen.append([name async for name in Async.async_objects.values_list("name", flat=True)])
            await Order(item_id=100).async_save()  # the fixture's row
            seen.append(await Order.objects.acount())

    assert_passed(run_case(Fixtures), 1)
    assert seen == [["fixture-ink"], 1]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_async_atomic_is_a_savepoint_inside_the_test() -> None:
    seen: list[Any] = []

    class Atomic(AsyncTestCase):
        async def test_it(self) -> None:
            try:
                async with async_atomic():
                    await Async.async_objects.acreate(name="undone")
                    raise ValueError("undo")
            except ValueError:
                pass
            async with async_atomic():
                await Async.async_objects.acreate(name="kept")
                async with async_atomic():
                    await Async.async_objects.acreate(name="nested")
            with pytest.raises(IntegrityError):
                async with async_atomic():
                    await Async.async_objects.acreate(name="kept")
            # durable=True nests in the test's transaction, as Django's does in a TestCase.
            async with async_atomic(durable=True):
                await Async.async_objects.acreate(name="durable")
            seen.append(sorted([n async for n in Item.objects.values_list("name", flat=True)]))

    assert_passed(run_case(Atomic), 1)
    assert seen == [["durable", "kept", "nested"]]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_on_commit_waits_as_djangos_does_in_a_test_case() -> None:
    ran: list[str] = []
    held: list[int] = []

    class OnCommit(AsyncTestCase):
        async def test_it(self) -> None:
            connection = async_connections["default"]
            async with async_atomic():
                await Async.async_objects.acreate(name="with a callback")
                await connection.on_commit(lambda: ran.append("ran"))
            held.append(len(connection.run_on_commit))

    assert_passed(run_case(OnCommit), 1)
    assert (ran, held) == ([], [1])


def test_assert_num_queries_and_capture_queries_count_the_async_backends_queries() -> None:
    captured: list[str] = []

    class Counted(AsyncTestCase):
        async def test_counted(self) -> None:
            with self.assertNumQueries(3):
                await Async.async_objects.acreate(name="one")
                await Item.objects.acreate(name="two")
                self.assertEqual(await Async.async_objects.acount(), 2)

        async def test_captured(self) -> None:
            with self.captureQueries() as queries:
                await Async.async_objects.filter(name="async backend").acount()
                await Item.objects.filter(name="Django").acount()
            captured.extend(query["sql"] for query in queries.captured_queries)

    assert_passed(run_case(Counted), 2)
    assert len(captured) == 2
    assert "'async backend'" in captured[0]
    assert "'Django'" in captured[1]


def test_raw_cursors_plain_and_named() -> None:
    seen: list[Any] = []

    class Cursors(AsyncTestCase):
        async def asyncSetUp(self) -> None:
            await Item.objects.acreate(name="b")
            await Item.objects.acreate(name="a")

        async def test_it(self) -> None:
            connection = async_connections["default"]
            async with await connection.cursor() as cursor:
                seen.append(cursor.description)  # before any query, as psycopg's
                await cursor.execute("SELECT count(*) FROM testapp_item")
                seen.append((await cursor.fetchone())[0])
            async with await connection.chunked_cursor() as cursor:
                await cursor.execute("SELECT name FROM testapp_item ORDER BY name")
                seen.append([row[0] async for row in cursor])

    assert_passed(run_case(Cursors), 1)
    assert seen == [None, 2, ["a", "b"]]


def test_what_the_bridge_does_not_run_fails_with_the_cause() -> None:
    errors: list[str] = []

    class Unsupported(AsyncTestCase):
        async def test_it(self) -> None:
            async with await async_connections["default"].cursor() as cursor:
                for call in (cursor.stream, cursor.copy):
                    try:
                        call("SELECT 1")
                    except NotImplementedError as exc:
                        errors.append(str(exc))

    assert_passed(run_case(Unsupported), 1)
    assert [error.split(" inside")[0] for error in errors] == [
        "djasynctest does not run django-async-backend's cursor.stream()",
        "djasynctest does not run django-async-backend's cursor.copy()",
    ]
    assert "AsyncTransactionTestCase" in errors[0]


def test_tasks_of_the_test_own_the_connection_as_in_production() -> None:
    """Hooks and the test run one after another: each owns the connection in turn. Tasks
    that run at the same time cannot share it, as in production."""
    errors: list[str] = []

    class Gather(AsyncTestCase):
        async def test_it(self) -> None:
            await Async.async_objects.acount()
            try:
                await asyncio.gather(Async.async_objects.acount(), Async.async_objects.acount())
            except RuntimeError as exc:
                errors.append(str(exc))

    assert_passed(run_case(Gather), 1)
    assert errors
    assert "owned by another task" in errors[0]


def test_requests_of_the_async_client_join_the_transaction() -> None:
    seen: list[Any] = []

    class Requests(AsyncTestCase):
        async def asyncSetUp(self) -> None:
            await Async.async_objects.acreate(name="before the request")

        async def test_it(self) -> None:
            response = await self.async_client.post(
                "/async-backend-items/", {"name": "made by the view"}
            )
            seen.append(response.json())
            seen.append(await Async.async_objects.acount())

    assert_passed(run_case(Requests), 1)
    assert seen == [{"items": ["before the request", "made by the view"]}, 2]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_no_connection_of_its_own_is_opened() -> None:
    counts: list[int] = []

    class NoConnection(AsyncTestCase):
        async def test_it(self) -> None:
            await Async.async_objects.acreate(name="written")
            counts.append(await Async.async_objects.acount())

    before = _server_connections()
    # Leak checks on (the default): a connection left open would be reported.
    assert_passed(run_case(NoConnection), 1)
    assert counts == [1]
    assert _server_connections() == before


def test_the_async_backends_code_the_bridge_relies_on() -> None:
    """A canary: _asyncbackend replaces these methods of AsyncDatabaseWrapper and leans
    on these lines. When one fails, read the new release's code at that place, adapt
    _asyncbackend, and update the canary."""
    import inspect

    from django_async_backend.db.backends.base.base import BaseAsyncDatabaseWrapper
    from django_async_backend.db.backends.postgresql.async_base import AsyncDatabaseWrapper
    from django_async_backend.db.transaction import AsyncAtomic

    def source(obj: object) -> str:
        return inspect.getsource(obj)  # type: ignore[arg-type]

    connect = source(BaseAsyncDatabaseWrapper.connect)
    for line in (
        "self.in_atomic_block = False",
        "self.savepoint_ids = []",
        "self.atomic_blocks = []",
        "self.connection = await self.get_new_connection(conn_params)",
        "await self.init_connection_state()",
        "connection_created.send(",
    ):
        assert line in connect, line
    from djasynctest._asyncbackend import ORIGINALS

    create_cursor = ORIGINALS.get("create_cursor", AsyncDatabaseWrapper.create_cursor)
    assert "self.connection.cursor()" in source(create_cursor)
    assert "self._prepare_cursor(self.create_cursor(name))" in source(
        BaseAsyncDatabaseWrapper._cursor
    )
    assert "if self._task is None:" in source(BaseAsyncDatabaseWrapper.validate_task_sharing)
    enter = source(ORIGINALS.get("AsyncAtomic.__aenter__", AsyncAtomic.__aenter__))
    assert "not connection.atomic_blocks[-1]._from_testcase" in enter
    assert "if connection.in_atomic_block:" in enter
    assert "connection.atomic_blocks.append(self)" in enter
    leave = source(ORIGINALS.get("AsyncAtomic.__aexit__", AsyncAtomic.__aexit__))
    assert "connection.atomic_blocks.pop()" in leave
    assert "if connection.savepoint_ids:" in leave
    assert "connection.in_atomic_block = False" in leave


def test_a_transaction_test_case_commits_for_real_and_closes_its_connections() -> None:
    from djasynctest import AsyncTransactionTestCase

    seen: list[Any] = []

    class Committed(AsyncTransactionTestCase):
        async def test_1_commits(self) -> None:
            async with async_atomic():
                await Async.async_objects.acreate(name="committed")
            # Committed: another connection (this test's own, Django's) sees it.
            seen.append(await Item.objects.acount())
            seen.append(await sync_to_async(_server_connections)() > before)

        async def test_2_flushed(self) -> None:
            seen.append(await Async.async_objects.acount())

    before = _server_connections()
    assert_passed(run_case(Committed), 2)
    assert seen == [1, True, 0]
    # Closed when each test ended: none is left to keep the test database from being dropped.
    assert _server_connections() == before


def test_capture_on_commit_callbacks_captures_and_runs_the_async_backends() -> None:
    ran: list[str] = []
    captured: list[int] = []
    errors: list[str] = []

    async def notify() -> None:
        ran.append("async callback")

    class Captured(AsyncTestCase):
        async def test_captured(self) -> None:
            connection = async_connections["default"]
            async with self.captureOnCommitCallbacks() as callbacks:
                await connection.on_commit(lambda: ran.append("not run"))
            captured.append(len(callbacks))

        async def test_executed(self) -> None:
            connection = async_connections["default"]

            async def register_another() -> None:
                await connection.on_commit(lambda: ran.append("registered by a callback"))

            async with self.captureOnCommitCallbacks(execute=True) as callbacks:
                async with async_atomic():
                    await connection.on_commit(notify)
                    await connection.on_commit(register_another)
                await Item.objects.acreate(name="with Django's callback too")
            captured.append(len(callbacks))

        async def test_sync_with_refuses_async_callbacks(self) -> None:
            connection = async_connections["default"]
            try:
                with self.captureOnCommitCallbacks(execute=True):
                    await connection.on_commit(notify)
            except TypeError as exc:
                errors.append(str(exc))

    assert_passed(run_case(Captured), 3)
    assert captured == [1, 3]
    assert ran == ["async callback", "registered by a callback"]
    assert errors
    assert "run it with 'async with self.captureOnCommitCallbacks(execute=True)'" in errors[0]


PYTEST_MODULE = """
import pytest
from django.contrib.auth.models import User

from tests.testapp.models import Item, Order


@pytest.fixture
def owner(db):
    return User.objects.create(username="owner")  # a sync fixture: on the DB thread


async def test_writes(owner):
    item = await Item.async_objects.acreate(name="pen")
    await Order(item_id=item.pk, user_id=owner.pk).async_save()
    assert await Order.objects.acount() == 1


@pytest.mark.django_db
async def test_rolled_back():
    assert await Item.async_objects.acount() == 0
    assert await Order.async_objects.acount() == 0


async def test_savepoints_tasks_and_requests(owner, async_client):
    import asyncio

    from django_async_backend.db.transaction import async_atomic

    try:
        async with async_atomic():
            await Item.async_objects.acreate(name="undone")
            raise ValueError
    except ValueError:
        pass
    await Item.async_objects.acreate(name="kept")
    # One task owns a connection, as in production.
    with pytest.raises(RuntimeError, match="owned by another task"):
        await asyncio.gather(Item.async_objects.acount(), Item.async_objects.acount())
    response = await async_client.post("/async-backend-items/", {"name": "posted"})
    assert response.json() == {"items": ["kept", "posted"]}
    assert await Item.objects.acount() == 2


async def test_counted_and_captured(
    db, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from django_async_backend.db import async_connections
    from django_async_backend.db.transaction import async_atomic

    with django_assert_num_queries(1) as queries:
        await Item.async_objects.acount()
    assert "COUNT" in queries.captured_queries[0]["sql"]
    async with django_capture_on_commit_callbacks() as callbacks, async_atomic():
        await async_connections["default"].on_commit(lambda: None)
    assert len(callbacks) == 1


# Committed for real, flushed after each test; the connections each test opened are
# closed when it ends, or the test database could not be dropped at the end (an error
# at the last test's teardown).
@pytest.mark.django_db(transaction=True)
async def test_commits():
    assert await Item.async_objects.acount() == 0
    await Item.async_objects.acreate(name="committed")
    assert await Item.objects.acount() == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_commits_on_pytest_asyncios_loop():
    assert await Item.async_objects.acount() == 0
    await Item.async_objects.acreate(name="committed")
    assert await Item.objects.acount() == 1
"""


@pytest.mark.parametrize("pool", [False, True], ids=["connections", "pools"])
def test_the_pytest_plugins_tests_share_the_transaction_or_commit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pool: bool
) -> None:
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.pytestproject.settings")
    monkeypatch.setenv("PYTHONPATH", str(root))
    suffix = os.environ.get("DJASYNCTEST_NAME_SUFFIX", "") + "_plugin"
    monkeypatch.setenv("DJASYNCTEST_NAME_SUFFIX", suffix)
    if pool:
        monkeypatch.setenv("DJASYNCTEST_DB_POOL", "1")
    pytester.makeini(
        "[pytest]\naddopts = -p djasynctest.pytest -p no:cacheprovider\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile(test_books=PYTEST_MODULE)
    result = pytester.runpytest_subprocess("-v", timeout=120)
    result.assert_outcomes(passed=6)


def test_connections_opened_on_a_loop_gone_since_are_closed_all_the_same() -> None:
    """A transactional test of the plugin whose sync fixture opened a connection through
    async_to_sync, on a loop that is gone at the test's end: it is closed on a loop made
    for it (the test database could not be dropped at the end of the run otherwise), and
    one that fails to close does not keep the others open."""
    from djasynctest._plugin_django import close_async_backend
    from djasynctest._plugin_item import ItemRun

    closed: list[str] = []

    class Wrapper:
        settings_dict: dict[str, Any] = {"OPTIONS": {}}

        def __init__(self, name: str, *, fails: bool = False) -> None:
            self.name, self.fails = name, fails

        async def close(self) -> None:
            closed.append(self.name)
            if self.fails:
                raise OSError("connection already broken")

    gone = asyncio.new_event_loop()
    gone.close()
    test = ItemRun(uses_db=True, runs="loop", in_place=True)
    test.opened = [(Wrapper("first", fails=True), gone), (Wrapper("second"), gone)]
    with pytest.raises(OSError, match="already broken"):
        close_async_backend(test)
    assert closed == ["first", "second"]
    assert test.opened == []


@pytest.mark.parametrize("runner", ["manage.py", "unittest", "manage.py with pools"])
def test_the_runners_run_it_the_same(runner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_runners import PROJECT, assert_unittest_ok, run

    if runner == "manage.py with pools":
        # The bridged tests open none; each AsyncTransactionTestCase test closes the
        # pool it opened on its loop: the test database is dropped at the end.
        monkeypatch.setenv("DJASYNCTEST_DB_POOL", "1")
    if runner.startswith("manage.py"):
        args = [str(PROJECT / "manage.py"), "test", "--noinput", "tests.runnerproject.asyncbackend"]
    else:
        args = ["-m", "unittest", "discover", "-s", "tests/runnerproject/asyncbackend", "-t", "."]
    assert_unittest_ok(run(*args), 8)


def test_transactions_of_tasks_that_run_at_once_take_turns() -> None:
    """async_new_connection gives each task a connection of its own: here, each one's
    transactions are savepoints on the DB thread's connection, which must nest."""
    from django_async_backend.db import async_new_connection

    seen: list[Any] = []

    async def write(name: str, *, fail: bool) -> None:
        async with async_new_connection():
            try:
                async with async_atomic():
                    await Async.async_objects.acreate(name=f"{name} 1")
                    await asyncio.sleep(0)  # the other task runs meanwhile
                    async with async_atomic():
                        await Async.async_objects.acreate(name=f"{name} 2")
                    if fail:
                        raise ValueError(name)
            except ValueError:
                pass

    async def parent() -> None:
        async with async_new_connection(), async_atomic():
            await Async.async_objects.acreate(name="parent")
            # Tasks started inside a transaction take turns among themselves.
            await asyncio.gather(write("child a", fail=False), write("child b", fail=True))

    class AtOnce(AsyncTestCase):
        async def test_it(self) -> None:
            await asyncio.gather(write("a", fail=False), write("b", fail=True), parent())
            names = Item.objects.order_by("name").values_list("name", flat=True)
            seen.append([name async for name in names])

    assert_passed(run_case(AtOnce), 1)
    assert seen == [["a 1", "a 2", "child a 1", "child a 2", "parent"]]


def test_a_live_servers_requests_join_the_transaction() -> None:
    import httpx

    from djasynctest import AsyncLiveServerTestCase

    seen: list[Any] = []

    class Live(AsyncLiveServerTestCase):
        async def test_it(self) -> None:
            await Async.async_objects.acreate(name="made by the test")
            async with httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http:
                response = await http.post(
                    "/async-backend-items/", data={"name": "made by a request"}
                )
            seen.append(response.json())
            seen.append(await Item.objects.acount())

    assert_passed(run_case(Live), 1)
    assert seen == [{"items": ["made by a request", "made by the test"]}, 2]
    assert leftover_rows() == {"items": [], "orders": 0}
