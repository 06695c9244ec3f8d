"""The pytest plugin (``-p djasynctest.pytest``), run in throwaway pytest projects.

Each test writes a user's test modules into a pytester directory and runs pytest
on them in a subprocess, with pytest-django and the settings of
tests/pytestproject (the library's test app, with an orders view). The user's
tests check that rows are rolled back by reading the tables in a later test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.clientlib import assert_one_loop_per_process, install_client

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

INI = """
[pytest]
addopts = -p djasynctest.pytest -p no:cacheprovider -p no:asyncio -p no:randomly
filterwarnings = error
"""

# The example of the plugin's feature request, as its users write it.
ISSUE_EXAMPLE = """
import pytest
from django.contrib.auth.models import User

from tests.testapp.models import Order


@pytest.fixture
async def user(db):
    return await User.objects.acreate(username="ann")


class TestOrders:
    @pytest.fixture(autouse=True)
    async def logged_in(self, user, async_client):
        await async_client.aforce_login(user)
        yield
        await async_client.alogout()

    async def test_order(self, async_client, user):
        response = await async_client.post("/orders/", {"item": 1})
        assert response.status_code == 201
        assert await Order.objects.acount() == 1   # gone after this test


@pytest.mark.django_db
async def test_orders_start_empty():
    assert await Order.objects.acount() == 0
"""

FIXTURES = """
import pytest
from tests.testapp.models import Item


@pytest.fixture
async def pen(db):
    return await Item.objects.acreate(name="pen")


@pytest.fixture
async def ink(pen):
    item = await Item.objects.acreate(name="ink")
    yield item
    # The teardown runs in the test's transaction: the test's rows are there.
    assert await Item.objects.filter(name__in=["pen", "ink", "paper"]).acount() == 3
    await item.adelete()


@pytest.fixture
def paper(db):
    # The sync ORM, in the test's transaction.
    return Item.objects.create(name="paper")


async def test_fixtures_and_test_share_the_transaction(pen, ink, paper):
    assert [item.name async for item in Item.objects.order_by("name")] == [
        "ink", "paper", "pen"
    ]


def test_sync_test_of_an_async_fixture_runs_in_its_transaction(pen):
    assert Item.objects.get().name == "pen"


@pytest.mark.django_db
async def test_rows_of_the_tests_before_are_gone():
    assert await Item.objects.acount() == 0
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest project on tests/pytestproject's settings, with the plugin enabled."""
    return make_project(pytester, monkeypatch)


def make_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.pytestproject.settings")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    # Runs that happen at the same time (xdist workers of this suite) use their own databases.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    monkeypatch.setenv(
        "DJASYNCTEST_NAME_SUFFIX", os.environ.get("DJASYNCTEST_NAME_SUFFIX", "") + "_" + worker
    )
    for name in list(os.environ):
        if name.startswith("PYTEST_XDIST"):
            monkeypatch.delenv(name)
    pytester.makeini(INI)
    return pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(*args, timeout=120)


def test_issue_example_runs_and_rolls_back(project: pytest.Pytester) -> None:
    project.makepyfile(test_orders=ISSUE_EXAMPLE)
    result = run(project, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*::test_order PASSED*", "*::test_orders_start_empty PASSED*"])


def test_without_the_plugin_async_rows_leak_into_the_next_test(project: pytest.Pytester) -> None:
    """What the plugin fixes: pytest-asyncio's ORM calls run outside pytest-django's transaction."""
    project.makeini(
        """
        [pytest]
        addopts = -p no:cacheprovider -p no:randomly
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        """
    )
    project.makepyfile(test_orders=ISSUE_EXAMPLE)
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_orders.py::test_orders_start_empty - assert 1 == 0"])


def test_sync_and_async_fixtures_run_in_the_test_transaction(project: pytest.Pytester) -> None:
    project.makepyfile(test_fixtures=FIXTURES)
    run(project).assert_outcomes(passed=3)


def test_sync_code_of_an_async_database_test_runs_on_the_main_thread(
    project: pytest.Pytester,
) -> None:
    """As pytest runs it, in the test's transaction; with a timeout, on the DB thread, which
    the test's thread can give up on."""
    project.makepyfile(
        test_threads="""
        import threading
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture
        async def pen(db):
            return await Item.objects.acreate(name="pen")


        @pytest.fixture
        def paper(pen):
            yield (threading.current_thread().name, Item.objects.create(name="paper"))
            assert Item.objects.count() == 3  # the test's row too


        def test_in_place(paper):
            where, _ = paper
            assert (where, threading.current_thread().name) == ("MainThread", "MainThread")
            Item.objects.create(name="ink")


        @pytest.mark.djasynctest(timeout=60)
        def test_with_a_timeout(paper):
            where, _ = paper
            assert (where, threading.current_thread().name) == ("djasynctest-db",) * 2
            Item.objects.create(name="ink")


        @pytest.mark.django_db
        async def test_rows_of_the_tests_before_are_gone():
            assert await Item.objects.acount() == 0
        """
    )
    run(project).assert_outcomes(passed=3)


def test_transactional_database(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_transactional="""
        import pytest
        from asgiref.sync import sync_to_async
        from django.db import transaction
        from tests.testapp.models import Item, Tag


        @pytest.mark.django_db(transaction=True)
        async def test_on_commit_runs_when_the_atomic_block_commits():
            calls = []

            @sync_to_async
            def create():
                with transaction.atomic():
                    Item.objects.create(name="committed")
                    transaction.on_commit(lambda: calls.append("committed"))

            await create()
            assert calls == ["committed"]


        async def test_transactional_db_fixture(transactional_db):
            await Item.objects.acreate(name="pen")
            assert await Item.objects.acount() == 1


        @pytest.mark.django_db(transaction=True, reset_sequences=True)
        async def test_reset_sequences():
            assert (await Item.objects.acreate(name="first")).pk == 1


        @pytest.mark.django_db(transaction=True, serialized_rollback=True)
        async def test_serialized_rollback_restores_the_migrations_rows():
            # The tests before flushed the row that a data migration made.
            assert await Tag.objects.filter(name="from-migration").aexists()


        @pytest.mark.django_db(transaction=True)
        async def test_tables_are_flushed_after_each_test():
            assert await Item.objects.acount() == 0


        @pytest.mark.django_db(databases=["default", "other"])
        async def test_other_database_in_the_transaction():
            await Item.objects.using("other").acreate(name="pen")
            assert await Item.objects.using("other").acount() == 1


        @pytest.mark.django_db(databases=["default", "other"])
        async def test_other_database_rolled_back():
            assert await Item.objects.using("other").acount() == 0
        """
    )
    run(project).assert_outcomes(passed=7)


def test_clients_reach_the_test_transaction(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_clients="""
        import pytest
        from asgiref.sync import sync_to_async
        from django.contrib.auth.models import User
        from tests.testapp.models import Item, Order


        @pytest.fixture
        async def pen(db):
            return await Item.objects.acreate(name="pen")


        async def test_async_client_sees_the_fixture_rows(async_client, pen):
            response = await async_client.get("/items/")
            assert response.json() == {"items": ["pen"]}


        def test_client_in_a_sync_test_sees_the_async_fixture_rows(client, pen):
            assert client.get("/sync-items/").json() == {"count": 1}


        async def test_admin_client_from_an_async_test(admin_client, pen):
            response = await sync_to_async(admin_client.get)("/sync-items/")
            assert response.json() == {"count": 1}


        async def test_view_writes_with_a_logged_in_async_client(async_client, django_user_model):
            user = await django_user_model.objects.acreate(username="bob")
            await async_client.aforce_login(user)
            response = await async_client.post("/orders/", {"item": 7})
            assert response.status_code == 201
            assert await Order.objects.filter(user=user).acount() == 1


        @pytest.mark.django_db
        async def test_nothing_is_left():
            assert await Item.objects.acount() == 0
            assert await Order.objects.acount() == 0
            assert await User.objects.acount() == 0
        """
    )
    run(project).assert_outcomes(passed=5)


def test_query_and_on_commit_fixtures_work_in_async_tests(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_tools="""
        import pytest
        from asgiref.sync import sync_to_async
        from django.db import transaction
        from tests.testapp.models import Item

        pytestmark = pytest.mark.django_db(databases=["default", "other"])


        @sync_to_async
        def create_with_callback(name, calls):
            with transaction.atomic():
                Item.objects.create(name=name)
                transaction.on_commit(lambda: calls.append(name))


        async def test_num_queries_with(django_assert_num_queries):
            with django_assert_num_queries(1) as captured:
                await Item.objects.acount()
            assert "COUNT" in captured.captured_queries[0]["sql"]


        async def test_num_queries_async_with(django_assert_num_queries):
            async with django_assert_num_queries(1, using="other"):
                await Item.objects.using("other").acount()


        async def test_max_num_queries(django_assert_max_num_queries):
            with django_assert_max_num_queries(2):
                await Item.objects.acount()
            async with django_assert_max_num_queries(1):
                await Item.objects.acount()


        async def test_num_queries_counts_the_test_queries(django_assert_num_queries):
            with django_assert_num_queries(0):
                await Item.objects.acount()


        async def test_on_commit_callbacks(django_capture_on_commit_callbacks):
            calls = []
            with django_capture_on_commit_callbacks() as callbacks:
                await create_with_callback("pen", calls)
            assert (len(callbacks), calls) == (1, [])
            async with django_capture_on_commit_callbacks(execute=True) as callbacks:
                await create_with_callback("ink", calls)
            assert (len(callbacks), calls) == (1, ["ink"])


        def test_sync_test_too(django_assert_num_queries, django_capture_on_commit_callbacks):
            with django_assert_num_queries(1):
                Item.objects.count()
        """
    )
    result = run(project)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_num_queries_counts_the_test_queries _*",
            "E * Failed: Expected to perform 0 queries but 1 was done (add -v option to show "
            "queries)",
        ]
    )


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_with_pytest_asyncio(project: pytest.Pytester, mode: str) -> None:
    """Tests that pytest-asyncio runs are routed to the DB thread; the others are ours."""
    project.makeini(
        f"""
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:randomly
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )
    project.makepyfile(
        test_asyncio="""
        import pytest
        import pytest_asyncio
        from tests.testapp.models import Item


        @pytest_asyncio.fixture
        async def pen(db):
            return await Item.objects.acreate(name="pen")


        @pytest.fixture
        def paper(db):
            return Item.objects.create(name="paper")


        @pytest.mark.asyncio
        async def test_pytest_asyncio_test(pen, paper):
            assert await Item.objects.acount() == 2


        @pytest_asyncio.fixture(loop_scope="module")
        async def lamp(db):
            return await Item.objects.acreate(name="lamp")


        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop(lamp):
            assert await Item.objects.acount() == 1


        @pytest.mark.django_db
        async def test_unmarked():
            assert await Item.objects.acount() == 0
        """
    )
    project.makepyfile(test_fixtures=FIXTURES)
    run(project).assert_outcomes(passed=6)


PYTEST_ASYNCIO_DIAGNOSED = """
import asyncio
import time

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from tests.asgi import application
from tests.testapp.models import Item


@pytest.mark.asyncio
async def test_blocks():
    time.sleep(0.3)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.djasynctest(timeout=0.5)
async def test_hangs():
    await asyncio.Event().wait()


@pytest.mark.asyncio(loop_scope="module")
async def test_leaves_a_task_on_the_module_loop():
    asyncio.get_running_loop().create_task(asyncio.sleep(10), name="module-left")


@pytest.mark.asyncio
async def test_leaves_a_task_on_its_own_loop():
    asyncio.get_running_loop().create_task(asyncio.sleep(10), name="function-left")


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_a_communicator_reaches_the_tests_transaction(async_client):
    # The communicator runs the consumer in a task with an empty context.
    await Item.objects.acreate(name="pen")
    await async_client.aforce_login(await User.objects.acreate(username="ann"))
    cookie = f"sessionid={async_client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(application, "/ws/items/", headers=[(b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from() == {"user": "ann", "items": 1}
    await communicator.send_json_to({"create": "ink"})
    assert await communicator.receive_json_from() == {"created": "ink", "items": 2}
    await communicator.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_the_rows_are_gone():
    assert await Item.objects.acount() == 0
"""


def test_what_pytest_asyncio_runs_gets_the_diagnostics_and_the_db_thread(
    project: pytest.Pytester,
) -> None:
    project.makeini(
        """
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:randomly
        asyncio_mode = strict
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )
    project.makepyfile(test_pytest_asyncio=PYTEST_ASYNCIO_DIAGNOSED)
    result = run(project)
    result.assert_outcomes(passed=4, failed=2, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*LoopBlocked: The event loop was blocked for 0.* s (blocking_threshold is "
            "0.1 s) in test_pytest_asyncio.py::test_blocks.*",
            "*TestTimeout: test_pytest_asyncio.py::test_hangs did not finish within its "
            "timeout of 0.5 s. When it expired, it was waiting in:",
            "*PendingTaskWarning: test_pytest_asyncio.py::test_leaves_a_task_on_the_module_loop "
            "left behind:",
            "*task module-left (<coroutine object sleep at *>) is still pending",
            "*PendingTaskWarning: test_pytest_asyncio.py::test_leaves_a_task_on_its_own_loop "
            "left behind:",
            "*task function-left (<coroutine object sleep at *>) is still pending",
        ]
    )


PYTEST_ASYNCIO_AUTO = """
[pytest]
addopts = -p djasynctest.pytest -p no:cacheprovider -p no:randomly
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

# A global object bound to the loop of the first test that uses it, like a client.
GLOBAL_QUEUE = """
import asyncio
import contextlib

QUEUE = asyncio.Queue()


async def test_binds_the_queue_to_its_loop():
    # An empty queue's get() binds the queue to the loop.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(QUEUE.get(), 0.001)


async def test_uses_it_on_the_loop_it_runs_on():
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(QUEUE.get(), 0.001)
"""


def test_pytest_asyncio_running_tests_off_the_session_loop_names_its_options(
    project: pytest.Pytester,
) -> None:
    """In auto mode, pytest-asyncio runs every async test, on loops of its own scopes."""
    project.makeini(PYTEST_ASYNCIO_AUTO)
    project.makepyfile(
        settings_session=(
            "from tests.pytestproject.settings import *  # noqa: F403\n"
            'DJASYNCTEST = {"LOOP_SCOPE": "session"}\n'
        ),
        test_queue=GLOBAL_QUEUE,
    )
    result = run(project, "--ds", "settings_session")
    result.assert_outcomes(passed=1, failed=1)
    said = (
        "E   *djasynctest: an object bound to another event loop was used here: pytest-asyncio "
        'runs this code on a loop of its own, of scope "function"'
    )
    gone = (
        "so an object kept from an earlier loop (a global async client, a lock, a queue) is "
        "bound to a loop that is gone."
    )
    result.stdout.fnmatch_lines(
        [
            "E   *RuntimeError: <Queue *> is bound to a different event loop",
            f'{said}, and not on the loop of djasynctest\'s loop_scope = "session", {gone} Set '
            "pytest-asyncio's ini options asyncio_default_test_loop_scope = session and "
            "asyncio_default_fixture_loop_scope = session, or disable pytest-asyncio "
            "(-p no:asyncio, and no asyncio_* ini options) to let djasynctest run the async "
            "tests.",
        ]
    )
    # Either fix works.
    run(
        project,
        "--ds",
        "settings_session",
        "-o",
        "asyncio_default_test_loop_scope=session",
        "-o",
        "asyncio_default_fixture_loop_scope=session",
    ).assert_outcomes(passed=2)
    project.makeini(INI.replace(" -p no:asyncio", ""))
    run(project, "--ds", "settings_session", "-p", "no:asyncio").assert_outcomes(passed=2)
    # With djasynctest's loop per test too, the longer scope to set is the session's.
    project.makeini(PYTEST_ASYNCIO_AUTO)
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"{said}, {gone} Set pytest-asyncio's ini options asyncio_default_test_loop_scope = "
            "session and asyncio_default_fixture_loop_scope = session to run every test on one "
            "loop, or make the object anew on each loop."
        ]
    )


def test_pytest_xdist(project: pytest.Pytester) -> None:
    project.makepyfile(test_orders=ISSUE_EXAMPLE, test_fixtures=FIXTURES)
    result = run(project, "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*"])


def test_reuse_db_and_create_db(project: pytest.Pytester) -> None:
    project.makepyfile(test_orders=ISSUE_EXAMPLE)
    for flags in (["--reuse-db"], ["--reuse-db"], ["--create-db"]):
        run(project, *flags).assert_outcomes(passed=2)


def test_sync_tests_and_unittest_classes_in_the_same_run(project: pytest.Pytester) -> None:
    """Enabled by pytest_plugins: what it does not handle runs as pytest-django runs it."""
    project.makeini(
        "[pytest]\naddopts = -p no:cacheprovider -p no:asyncio -p no:randomly\n"
        "filterwarnings = error"
    )
    project.makeconftest('pytest_plugins = ["djasynctest.pytest"]')
    project.makepyfile(
        test_mixed="""
        import pytest
        from django.test import TestCase
        from djasynctest import AsyncTestCase
        from tests.testapp.models import Item


        @pytest.mark.django_db
        def test_sync():
            Item.objects.create(name="sync")
            assert Item.objects.count() == 1


        def test_without_database():
            with pytest.raises(RuntimeError, match="Database access not allowed"):
                Item.objects.count()


        class Cases(AsyncTestCase):
            async def test_async_case(self):
                await Item.objects.acreate(name="case")
                self.assertEqual(await Item.objects.acount(), 1)

            def test_sync_case(self):
                self.assertEqual(Item.objects.count(), 0)


        class DjangoCases(TestCase):
            def test_django_case(self):
                Item.objects.create(name="django")
                self.assertEqual(Item.objects.count(), 1)


        @pytest.mark.django_db
        async def test_async():
            await Item.objects.acreate(name="async")
            assert await Item.objects.acount() == 1


        @pytest.mark.django_db
        def test_sync_after():
            assert Item.objects.count() == 0
        """
    )
    run(project).assert_outcomes(passed=7)


def test_timeout_leaves_the_making_of_the_test_databases_out(project: pytest.Pytester) -> None:
    """The first db test sets pytest-django's session fixture up: not within its timeout."""
    project.makeconftest(
        """
        import time
        import pytest


        @pytest.fixture(scope="session")
        def django_db_setup(django_db_setup):
            time.sleep(1)  # a test database that takes a while to make
        """
    )
    project.makepyfile(
        test_first="""
        import pytest
        from tests.testapp.models import Item


        @pytest.mark.django_db
        @pytest.mark.djasynctest(timeout=0.5)
        async def test_quick():
            assert await Item.objects.acount() == 0
        """
    )
    run(project).assert_outcomes(passed=1)


def test_timeout_from_the_marker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_timeout="""
        import asyncio
        import pytest
        from tests.testapp.models import Item

        pytestmark = pytest.mark.django_db


        @pytest.mark.djasynctest(timeout=0.5)
        async def test_hangs():
            await Item.objects.acreate(name="pen")
            await asyncio.Event().wait()


        async def test_after_the_timeout():
            assert await Item.objects.acount() == 0
        """
    )
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   djasynctest.TestTimeout: test_timeout.py::test_hangs did not finish within its "
            "timeout of 0.5 s. When it expired, it was waiting in:",
            "    the test:",
            '      File "*test_timeout.py", line 11, in test_hangs',
            "        await asyncio.Event().wait()",
        ]
    )


def test_blocking_detector_and_leak_report(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_diagnostics="""
        import asyncio
        import time
        import pytest


        async def test_blocks():
            time.sleep(0.3)


        @pytest.mark.djasynctest(blocking_threshold=None)
        async def test_blocking_detector_off():
            time.sleep(0.3)


        @pytest.mark.djasynctest(blocking_mode="warn")
        @pytest.mark.filterwarnings("default")
        async def test_blocking_warns():
            time.sleep(0.3)


        async def test_leaves_a_task():
            asyncio.get_running_loop().create_task(asyncio.sleep(10))
        """
    )
    result = run(project)
    result.assert_outcomes(passed=3, failed=1, errors=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "E * djasynctest.PendingTaskWarning: test_diagnostics.py::test_leaves_a_task left "
            "behind:",
            "    task * (<coroutine object sleep at *>) is still pending",
            "      created at *test_diagnostics.py:22, in test_leaves_a_task",
            "E   djasynctest.LoopBlocked: The event loop was blocked for 0.* s "
            "(blocking_threshold is 0.1 s) in test_diagnostics.py::test_blocks. While it was "
            "blocked, its thread was running:",
            '*File "*test_diagnostics.py", line 7, in test_blocks',
            "*test_diagnostics.py:15: BlockingWarning: The event loop was blocked for 0.* s*",
        ]
    )
    # Python 3.13.0 names a task that a task factory made "None": never shown.
    assert "task None" not in result.stdout.str()


def test_leak_report_of_a_database_test_still_rolls_it_back(project: pytest.Pytester) -> None:
    """The leaks of an async-DB test are reported before its rollback, as a test class's
    are; a report that raises (warnings as errors) still leaves the database clean."""
    project.makepyfile(
        test_leaks="""
        import asyncio
        import pytest
        from tests.testapp.models import Item

        pytestmark = pytest.mark.django_db


        async def test_leaves_a_task():
            await Item.objects.acreate(name="pen")
            asyncio.get_running_loop().create_task(asyncio.sleep(10))


        async def test_starts_clean():
            assert await Item.objects.acount() == 0
        """
    )
    result = run(project, "-W", "error::djasynctest.PendingTaskWarning", "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E * djasynctest.PendingTaskWarning: test_leaks.py::test_leaves_a_task left behind:",
            "*task * (<coroutine object sleep at *>) is still pending",
        ]
    )


def test_ini_options_and_settings_give_the_defaults(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_options="""
        import time
        import pytest


        async def test_blocks():
            time.sleep(0.3)


        @pytest.mark.djasynctest(blocking_threshold=0.1)
        async def test_marker_wins():
            time.sleep(0.3)
        """
    )
    result = run(project, "-o", "djasynctest_blocking_threshold=none")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_options.py::test_marker_wins - *LoopBlocked*"])


def test_wrong_options_name_the_fix(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_wrong="""
        import pytest


        @pytest.mark.djasynctest(timout=5)
        async def test_misspelt():
            pass


        @pytest.mark.djasynctest(timeout=-1)
        async def test_negative():
            pass


        @pytest.mark.djasynctest(timeout="fast")
        async def test_not_a_number():
            pass
        """
    )
    result = run(project)
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*test_wrong.py::test_misspelt: timout is not an option of @pytest.mark.djasynctest; "
            "did you mean timeout? the options are loop_scope, loop_factory, timeout, "
            "blocking_threshold, blocking_mode, "
            "blocking_allowed, leak_checks, task_creation_stacks, loop_debug.",
            "*test_wrong.py::test_negative: timeout in @pytest.mark.djasynctest is -1; it must be "
            "a number of seconds greater than 0, or None to turn it off.",
        ]
    )
    # Each message once, with nothing around it.
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at setup of test_not_a_number _*",
            "test_wrong.py::test_not_a_number: timeout in @pytest.mark.djasynctest is 'fast'; it "
            "must be a number of seconds greater than 0, or None to turn it off.",
            "*= short test summary info =*",
        ],
        consecutive=True,
    )
    result = run(project, "-o", "djasynctest_blocking_mode=loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: The ini option djasynctest_blocking_mode is 'loud'; it must be 'fail' "
            "(the test fails) or 'warn' (a BlockingWarning)."
        ]
    )
    result = run(project, "-p", "no:django")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: djasynctest.pytest runs tests with pytest-django's database, and "
            "pytest-django is not installed or is disabled: pip install pytest-django, and "
            "remove any -p no:django."
        ]
    )


def test_without_django_settings_the_run_stops_with_what_to_set(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    project.makepyfile(test_orders=ISSUE_EXAMPLE)
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines == [
        "ERROR: djasynctest.pytest runs tests with pytest-django's database, and Django's "
        "settings are not configured: set DJANGO_SETTINGS_MODULE = mysite.settings in the "
        "pytest configuration, or pass --ds=mysite.settings.",
        "",
    ]
    # Settings that a conftest.py configures in its pytest_configure() are configured.
    project.makeconftest(
        """
        from django.conf import settings

        from tests.pytestproject import settings as project_settings


        def pytest_configure():
            settings.configure(
                **{name: getattr(project_settings, name) for name in dir(project_settings)
                   if name.isupper()}
            )
        """
    )
    run(project).assert_outcomes(passed=2)


def test_higher_scoped_async_fixtures_run_once_on_a_loop_of_their_scope(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_a_scoped="""
        import asyncio
        import pytest

        EVENTS = []


        @pytest.fixture(scope="module")
        async def module_loop():
            EVENTS.append("module set up")
            yield asyncio.get_running_loop()
            await asyncio.sleep(0)
            EVENTS.append("module torn down")


        class TestShared:
            @pytest.fixture(scope="class")
            @classmethod
            async def class_loop(cls):
                EVENTS.append("class set up")
                yield asyncio.get_running_loop()
                EVENTS.append("class torn down")

            async def test_one(self, module_loop, class_loop):
                assert module_loop is not class_loop
                assert asyncio.get_running_loop() not in (module_loop, class_loop)

            async def test_two(self, module_loop, class_loop):
                assert not module_loop.is_closed()
                assert EVENTS == ["module set up", "class set up"]


        def test_after_the_class(module_loop):
            assert EVENTS == ["module set up", "class set up", "class torn down"]
        """,
        test_b_after="""
        from test_a_scoped import EVENTS


        def test_after_the_module():
            assert EVENTS[-1] == "module torn down"
        """,
    )
    run(project).assert_outcomes(passed=4)


def test_import_leaves_django_setup_to_pytest_django(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DJANGO_SETTINGS_MODULE naming a module that pytest-django puts on sys.path.

    Canary: ``djasynctest._bootstrap._imported_as_pytest_plugin`` recognises
    pytest's ``PytestPluginManager.import_plugin`` on the stack. If pytest
    renames it, this fails with ModuleNotFoundError: find the new name in
    _pytest/config/__init__.py.
    """
    site = project.path / "site"
    (site / "project").mkdir(parents=True)
    (site / "project" / "__init__.py").write_text("")
    (site / "manage.py").write_text("")
    (site / "project" / "settings.py").write_text(
        "SECRET_KEY = 'x'\n"
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'django.contrib.auth']\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"
    )
    (site / "test_site.py").write_text(
        "import pytest\n"
        "from django.contrib.auth.models import User\n\n\n"
        "@pytest.mark.django_db\n"
        "async def test_users():\n"
        "    assert await User.objects.acount() == 0\n"
    )
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "project.settings")
    run(project, "site/test_site.py").assert_outcomes(passed=1)


def test_pytest_randomly(project: pytest.Pytester) -> None:
    pytest.importorskip("pytest_randomly")
    project.makepyfile(test_orders=ISSUE_EXAMPLE, test_fixtures=FIXTURES)
    for seed in ("1", "2"):
        result = run(project, "-p", "randomly", f"--randomly-seed={seed}")
        result.assert_outcomes(passed=5)


@pytest.mark.skipif(
    len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2,
    reason="needs sched_setaffinity and 2+ CPUs",
)
def test_an_async_database_test_runs_its_threads_on_one_cpu(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_affinity="""
        import os
        import pytest
        from djasynctest._dbthread import db_thread

        CPUS = os.sched_getaffinity(0)


        def masks():
            return os.sched_getaffinity(0), os.sched_getaffinity(db_thread().thread.native_id)


        @pytest.mark.django_db
        async def test_pinned():
            mine, db = masks()
            assert len(mine) == 1 and mine == db


        def test_given_back_after_it():
            assert masks() == (CPUS, CPUS)
        """
    )
    run(project).assert_outcomes(passed=2)


# --- Loop scopes ---------------------------------------------------------------------

CLIENT_CONFTEST = """
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "site-packages"))

import fakeclient  # noqa: E402


@pytest.fixture(scope="session")
async def session_client():
    client = fakeclient.Client("session fixture")
    await client.ping()
    yield client
    # Its teardown still runs on the session's loop.
    assert await client.ping() == "PONG"
"""

# Two modules that share a global client, a session fixture's client, and a view
# that uses the global one, from plugin-run tests and from a test class.
CLIENT_TESTS = """
import asyncio

import fakeclient
from djasynctest import AsyncTestCase
from tests.testapp.models import Item


async def test_function(session_client, async_client, db):
    assert await fakeclient.CLIENT.ping() == "PONG"
    assert await session_client.ping() == "PONG"
    await Item.objects.acreate(name="function")
    response = await async_client.get("/ping/")
    assert response.json() == {{"pong": "PONG", "items": 1}}


class TestClass(AsyncTestCase):
    {class_scope}

    async def test_method(self):
        assert await fakeclient.CLIENT.ping() == "PONG"
        response = await self.async_client.get("/ping/")
        assert response.json() == {{"pong": "PONG", "items": 0}}
"""

ONE_LOOP_CHECK = """
import fakeclient


def test_one_loop_for_the_whole_run():
    assert all(loop is fakeclient.LOOPS[0] for loop in fakeclient.LOOPS)
    assert not fakeclient.LOOPS[0].is_closed()
"""

SESSION_SETTINGS = """
from tests.pytestproject.settings import *  # noqa: F403

ROOT_URLCONF = "clienturls"
DJASYNCTEST = {"LOOP_SCOPE": "session"}
"""


def _client_project(project: pytest.Pytester, class_scope: str) -> Path:
    install_client(project.path)
    tests = CLIENT_TESTS.format(class_scope=class_scope)
    project.makeconftest(CLIENT_CONFTEST)
    project.makepyfile(
        settings_session=SESSION_SETTINGS,
        test_a=tests,
        test_b=tests,
        test_c_check=ONE_LOOP_CHECK,
    )
    return project.path / "connections.txt"


def _connections(record: Path) -> list[str]:
    return sorted(record.read_text().splitlines())


@pytest.mark.parametrize(
    ("how", "args", "class_scope"),
    [
        ("settings", ["--ds", "settings_session"], "pass"),
        (
            "ini",
            ["--ds", "settings_session", "-o", "djasynctest_loop_scope=session"],
            'loop_scope = "session"',
        ),
    ],
)
def test_session_scope_one_loop_for_plugin_tests_fixtures_and_classes(
    project: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    args: list[str],
    class_scope: str,
) -> None:
    if how == "ini":
        SESSION_SETTINGS_WITHOUT_SCOPE = SESSION_SETTINGS.replace(
            'DJASYNCTEST = {"LOOP_SCOPE": "session"}', ""
        )
        (project.path / "settings_session.py").write_text(SESSION_SETTINGS_WITHOUT_SCOPE)
    record = _client_project(project, class_scope)
    monkeypatch.setenv("CLIENT_RECORD", str(record))
    result = run(project, *args)
    result.assert_outcomes(passed=5)
    pid = _connections(record)[0].split()[0]
    # One connection per client for the whole run, closed with the loop at its end.
    assert _connections(record) == [
        f"{pid} global closed",
        f"{pid} global connected",
        f"{pid} session fixture closed",
        f"{pid} session fixture connected",
    ]
    output = result.stdout.str() + result.stderr.str()
    for noise in ("Task was destroyed", "Event loop is closed", "Exception ignored"):
        assert noise not in output


def test_session_scope_one_loop_per_xdist_worker(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _client_project(project, "pass")
    (project.path / "test_c_check.py").unlink()  # a worker runs only some of the modules
    monkeypatch.setenv("CLIENT_RECORD", str(record))
    result = run(project, "--ds", "settings_session", "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=4)
    assert_one_loop_per_process(record, {"global", "session fixture"})


def test_module_scope_from_the_marker_and_closed_after_the_module(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_a="""
        import asyncio

        import pytest
        from djasynctest import AsyncTestCase

        pytestmark = pytest.mark.djasynctest(loop_scope="module")
        LOOPS = []


        @pytest.fixture(scope="module")
        async def module_queue():
            queue = asyncio.Queue()
            yield queue
            assert asyncio.get_running_loop() is LOOPS[0]
            assert not LOOPS[0].is_closed()


        async def test_one(module_queue):
            LOOPS.append(asyncio.get_running_loop())
            await module_queue.put(1)


        async def test_two(module_queue):
            LOOPS.append(asyncio.get_running_loop())
            assert await module_queue.get() == 1  # bound to the module's loop
            # pytest-django runs the class first.
            assert len(LOOPS) == 3
            assert LOOPS[0] is LOOPS[1] is LOOPS[2]


        class TestClass(AsyncTestCase):
            loop_scope = "module"

            async def test_method(self):
                LOOPS.append(asyncio.get_running_loop())
        """,
        test_b="""
        import asyncio

        import pytest

        from test_a import LOOPS


        @pytest.mark.djasynctest(loop_scope="function")
        async def test_after_the_module():
            assert LOOPS[0].is_closed()
            assert asyncio.get_running_loop() is not LOOPS[0]
        """,
    )
    run(project).assert_outcomes(passed=4)


def test_loop_scopes_take_pytests_names(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_scopes="""
        import pytest


        @pytest.mark.djasynctest(loop_scope="package")
        async def test_package():
            pass


        @pytest.mark.djasynctest(loop_scope="test")
        async def test_the_classes_name():
            pass
        """
    )
    result = run(project)
    result.assert_outcomes(errors=2)
    accepted = (
        "it must be 'function' (a new event loop for each test), 'class' (one for each "
        "class), 'module' (one for each test module) or 'session' (one for the whole run)."
    )
    result.stdout.fnmatch_lines(
        [
            "test_scopes.py::test_package: loop_scope in @pytest.mark.djasynctest is 'package'; "
            + accepted,
            "test_scopes.py::test_the_classes_name: loop_scope in @pytest.mark.djasynctest is "
            "'test'; " + accepted,
        ]
    )
    result = run(project, "-o", "djasynctest_loop_scope=package")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: The ini option djasynctest_loop_scope is 'package'; " + accepted]
    )


def test_an_object_bound_to_a_loop_that_is_gone_names_the_fix_in_pytests_words(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_queue=GLOBAL_QUEUE)
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *RuntimeError: <Queue *> is bound to a different event loop",
            "E   *djasynctest: an object bound to another event loop was used here: with "
            'loop_scope = "function", each test has a loop of its own, so an object kept from '
            "an earlier one (a global async client, a lock, a queue) is bound to a loop that is "
            'gone. Set loop_scope = "session" (with @pytest.mark.djasynctest(loop_scope='
            '"session"), the ini option djasynctest_loop_scope = session, or DJASYNCTEST = '
            '{"LOOP_SCOPE": "session"} in settings) to run every test on one loop, or make the '
            "object anew on each loop.",
        ]
    )


def test_loop_factory_for_plugin_run_tests(project: pytest.Pytester) -> None:
    project.makepyfile(
        factories="""
        import asyncio

        MADE = []


        def new_loop():
            loop = asyncio.new_event_loop()
            MADE.append(loop)
            return loop
        """,
        test_factory="""
        import asyncio

        import pytest

        from factories import MADE, new_loop


        async def test_from_the_ini():
            assert asyncio.get_running_loop() is MADE[-1]


        @pytest.mark.djasynctest(loop_factory=new_loop, loop_scope="module")
        async def test_from_the_marker():
            assert asyncio.get_running_loop() is MADE[-1]
        """,
    )
    run(project, "-o", "djasynctest_loop_factory=factories.new_loop").assert_outcomes(passed=2)
    result = run(project, "-o", "djasynctest_loop_factory=factories.no_such")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: The ini option djasynctest_loop_factory is 'factories.no_such'; it must be "
            "a callable that makes an event loop, or the dotted path of one."
        ]
    )
