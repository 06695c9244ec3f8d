"""The documentation's code samples are code that runs.

Every Python sample in docs/ is a ``literalinclude`` of a file that is executed:
the example project's tests (run by ``nox -s example``), its pytest-asyncio
sample, or tests/docs_examples/ (run here). The README's sample is the example
project's test module itself.
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import redis.asyncio as redis
from django.test import override_settings

from djasynctest import AsyncTestCase, BlockingWarning
from djasynctest._conf import options
from djasynctest._loop import close_shared_loops
from tests.testapp.models import Item, Order
from tests.utils import assert_passed, problems, run_case

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The example project runs under its own suite (nox -s example); docs_examples here.
EXECUTED = (ROOT / "tests" / "docs_examples", ROOT / "examples" / "shop")


def _pages() -> list[Path]:
    return sorted(path for path in DOCS.rglob("*.rst") if "_build" not in path.parts)


def test_docs_show_python_only_from_files_that_run() -> None:
    for page in _pages():
        text = page.read_text()
        assert ".. code-block:: python" not in text, f"{page}: use a literalinclude"
        for include in re.findall(r"^\.\. literalinclude:: (\S+\.py)$", text, re.MULTILINE):
            path = (page.parent / include).resolve()
            assert path.is_file(), f"{page}: {include}"
            assert any(path.is_relative_to(folder) for folder in EXECUTED), f"{page}: {include}"


def test_readme_sample_is_the_example_projects_test_module() -> None:
    readme = (ROOT / "README.md").read_text()
    [sample] = re.findall(r"^```python\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL)
    module = ROOT / "examples" / "shop" / "orders" / "tests" / "test_readme.py"
    assert sample == module.read_text()


def test_every_docs_example_module_is_run_here() -> None:
    modules = {path.stem for path in (ROOT / "tests" / "docs_examples").glob("*.py")}
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert modules - {"__init__"} <= tested, "add a test_<module> function below"


def test_health_blocking() -> None:
    from tests.docs_examples.health_blocking import HealthTests

    [(_, text)] = run_case(HealthTests).failures
    assert "djasynctest.LoopBlocked: The event loop was blocked for" in text
    # The lines the how-to's output shows are those of the file it includes.
    page = (DOCS / "howto" / "find-blocking.rst").read_text()
    shown = re.findall(r'test_health\.py", line (\d+), in (\w+)', page)
    assert [function for _, function in shown] == [
        "test_health",
        "health",
        "check_payment_provider",
    ]
    for line, function in shown:
        assert f'health_blocking.py", line {line}, in {function}' in text, text
    # So does the advice, wrapped on the page.
    output = _text_blocks(DOCS / "howto" / "find-blocking.rst")[0]
    advice = text.splitlines()[-1]
    assert advice.startswith("A blocking call stalls every task of the test."), text
    assert f" {advice} " in output


def test_health_fixed() -> None:
    from tests.docs_examples.health_fixed import HealthTests

    assert_passed(run_case(HealthTests), 1)


def test_options() -> None:
    from tests.docs_examples import options as sample

    assert options(sample.ReportTests).blocking_threshold == 0.5
    with override_settings(DJASYNCTEST=sample.DJASYNCTEST):

        class Default(sample.AsyncTestCase):  # type: ignore[name-defined]
            pass

        resolved = options(Default)
    assert (resolved.blocking_threshold, resolved.blocking_mode) == (0.2, "warn")


def test_project_settings() -> None:
    from tests.docs_examples import project_settings

    with override_settings(DJASYNCTEST=project_settings.DJASYNCTEST):
        from djasynctest import AsyncTestCase

        class Default(AsyncTestCase):
            pass

        assert options(Default).loop_scope == "session"


def test_webhook_timeout() -> None:
    from tests.docs_examples.webhook_timeout import WebhookTests

    assert options(WebhookTests).timeout == 10
    assert_passed(run_case(WebhookTests), 1)


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("localhost", 6379), timeout=1):
            return True
    except OSError:
        return False


def _needs_redis() -> None:
    if _redis_reachable():
        return
    message = "redis-server is not reachable on localhost:6379: start it, or see .ci/run."
    if os.environ.get("DJASYNCTEST_REQUIRE_REDIS"):
        pytest.fail(message)
    pytest.skip(message)


def test_cache() -> None:
    """The module of the project that cache_clients tests."""
    from tests.docs_examples import cache

    assert cache.client.connection_pool.connection_kwargs["port"] == 6379


def test_cache_clients() -> None:
    _needs_redis()
    from tests.docs_examples import cache
    from tests.docs_examples.cache_clients import CartTests, CheckoutTests

    try:
        assert_passed(run_case(CartTests), 1)
        assert_passed(run_case(CheckoutTests), 1)
        # One connection, made in the first class, served both.
        [connection] = cache.client.connection_pool._available_connections
        assert connection.is_connected
    finally:
        close_shared_loops()  # the end of the run: at_loop_close closes the client
    assert not connection.is_connected

    # The how-to's point: with a loop per class, a client kept from the first class
    # is bound to a loop that is gone, and the error says what to do.
    kept = {"client": redis.Redis.from_url("redis://localhost:6379/0")}

    class PerClass(AsyncTestCase):
        loop_scope = "class"

        async def test_ping(self) -> None:
            self.assertTrue(await kept["client"].ping())

    assert_passed(run_case(PerClass), 1)
    [(_, text)] = run_case(PerClass).errors
    # The how-to shows the note (and, below, the error of the sample without loop_scope)
    # as the code words it, wrapped.
    other_loop, _ = _text_blocks(DOCS / "howto" / "global-clients.rst")
    assert re.search(
        r"RuntimeError: Task <Task pending .*> got Future <Future pending.*> "
        r"attached to a different loop\n",
        text,
    ), text
    [note] = [line for line in text.splitlines() if line.startswith("djasynctest: ")]
    assert other_loop == (
        "RuntimeError: Task <Task pending ...> got Future <Future pending> attached to a "
        f"different loop {note}"
    )
    with warnings.catch_warnings():
        # Its connection went with the first class's loop, unclosed, as it would for a user.
        warnings.simplefilter("ignore", ResourceWarning)
        kept.clear()
        gc.collect()


def test_cache_clients_with_a_loop_per_class() -> None:
    """What the how-to says of the sample with loop_scope = "class": it passes, as
    at_loop_close closes the first class's connection, and the second class, which
    registers nothing, leaves its own open when its loop closes."""
    _needs_redis()
    from tests.docs_examples import cache
    from tests.docs_examples.cache_clients import CartTests, CheckoutTests

    class CartPerClass(CartTests):
        loop_scope = "class"

    class CheckoutPerClass(CheckoutTests):
        loop_scope = "class"

    pool = cache.client.connection_pool
    try:
        assert_passed(run_case(CartPerClass), 1)
        assert [each.is_connected for each in pool._available_connections] == [False]
        assert_passed(run_case(CheckoutPerClass), 1)
        assert [each.is_connected for each in pool._available_connections] == [True]
    finally:
        with warnings.catch_warnings():
            # The connection left open on a closed loop: gone without a word from redis.
            warnings.simplefilter("ignore", ResourceWarning)
            pool.reset()
            gc.collect()


def test_cache_clients_without_loop_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.docs_examples.cache_clients import CartTests

    monkeypatch.delattr(CartTests, "loop_scope")

    [text] = problems(run_case(CartTests))
    _, no_loop_scope = _text_blocks(DOCS / "howto" / "global-clients.rst")
    assert text == f"{no_loop_scope}\n"


def _text_blocks(page: Path) -> list[str]:
    """The ``.. code-block:: text`` blocks of a page, their lines joined by a space."""
    blocks = re.findall(r"^\.\. code-block:: text\n\n((?:    .*\n|\n)+)", page.read_text(), re.M)
    return [" ".join(block.split()) for block in blocks]


# A user's suite, written for Django's classes, to run on ours (docs/howto/try-a-suite.rst).
SUITE_ON_DJANGOS_NAMES = """
import unittest

from django.conf import settings
from django.contrib.auth.models import User
from django.test import SimpleTestCase, TestCase, TransactionTestCase, override_settings
from django.test import testcases


class ApiTestCase(testcases.TestCase):
    # A package's base class, built on django.test.testcases (as DRF's APITestCase is).
    pass


@override_settings(USE_TZ=False)
class Simple(SimpleTestCase):
    def test_settings(self):
        self.assertFalse(settings.USE_TZ)


@override_settings(USE_TZ=False)
class Api(ApiTestCase):
    def test_settings(self):
        self.assertFalse(settings.USE_TZ)


class Rows(TestCase):
    @classmethod
    def setUpTestData(cls):
        User.objects.create(username="ann")

    async def test_counts_async_queries(self):
        self.assertIsInstance(self, unittest.IsolatedAsyncioTestCase)
        # Django's own TestCase raises SynchronousOnlyOperation here.
        with self.assertNumQueries(1):
            self.assertEqual(await User.objects.acount(), 1)


class Commits(TransactionTestCase):
    async def test_commits(self):
        await User.objects.acreate(username="bob")
        self.assertEqual(await User.objects.acount(), 1)
"""


def _suite_on_djangos_names(tmp_path: Path) -> Path:
    package = tmp_path / "djangosuite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "test_suite.py").write_text(SUITE_ON_DJANGOS_NAMES)
    return package


def test_swapped_runner(tmp_path: Path) -> None:
    from tests.test_runners import PROJECT, assert_unittest_ok, importable, run

    _suite_on_djangos_names(tmp_path)
    (tmp_path / "swappedsettings.py").write_text(
        "from tests.runnerproject.settings import *  # noqa: F403\n"
        'TEST_RUNNER = "tests.docs_examples.swapped_runner.Runner"\n'
    )
    with importable(tmp_path):
        process = run(
            str(PROJECT / "manage.py"),
            "test",
            "--noinput",
            "djangosuite",
            settings="swappedsettings",
        )
    assert_unittest_ok(process, 4)


def test_swapped_conftest(tmp_path: Path) -> None:
    """pytest-django sets up the databases of the swapped classes, as of Django's."""
    from tests.test_runners import importable, run

    package = _suite_on_djangos_names(tmp_path)
    conftest = ROOT / "tests" / "docs_examples" / "swapped_conftest.py"
    (package / "conftest.py").write_text(conftest.read_text())
    with importable(tmp_path):
        process = run(
            "-m", "pytest", str(package), "-p", "no:cacheprovider", "-p", "no:asyncio", "-q"
        )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert re.search(r"^4 passed in ", output, re.MULTILINE), output


def test_pytest_asyncio_sample_runs_under_pytest_asyncio() -> None:
    """The how-to's pytest-asyncio "before" passes, next to its djasynctest "after"."""
    shop = ROOT / "examples" / "shop"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            os.devnull,
            "--rootdir",
            str(shop),
            "--ds",
            "shop.settings",
            "-p",
            "asyncio",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "-q",
            "orders/tests/pytest_asyncio_before.py",
            # The how-to's claim: both styles run in one pytest session.
            "orders/tests/test_from_pytest_asyncio.py",
        ],
        cwd=shop,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert re.search(r"^2 passed", output, re.MULTILINE), output


def test_async_backend() -> None:
    from tests.dbconfig import BACKEND

    if BACKEND != "postgres-async-backend":
        pytest.skip("runs with DJASYNCTEST_DB=postgres-async-backend (nox -s asyncbackend)")
    from tests.docs_examples.async_backend import OrderTests

    assert_passed(run_case(OrderTests), 1)
    assert not Item.objects.exists()


def test_async_backend_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.utils import ConnectionHandler

    from tests.dbconfig import BACKEND

    if BACKEND != "postgres-async-backend":
        pytest.skip("runs with DJASYNCTEST_DB=postgres-async-backend (nox -s asyncbackend)")
    from django_async_backend.db.models.base import AsyncModelMixin

    # The suite's settings install the app as the sample does; its models have no mixin.
    assert not issubclass(Order, AsyncModelMixin)
    assert Order.async_objects.model is Order
    for name, variable in [("HOST", "PGHOST"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")]:
        monkeypatch.setenv(f"POSTGRES_{name}", os.environ.get(variable, "djasynctest"))
    monkeypatch.setenv("POSTGRES_DB", "postgres")
    sample = importlib.reload(importlib.import_module("tests.docs_examples.async_backend_settings"))
    assert "django_async_backend" in sample.INSTALLED_APPS
    handler = ConnectionHandler(sample.DATABASES)
    try:
        with handler["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    finally:
        handler.close_all()


def test_postgres_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.utils import ConnectionHandler

    from tests.dbconfig import BACKEND

    if BACKEND != "postgres":
        pytest.skip("connects to PostgreSQL")
    for name, variable in [("HOST", "PGHOST"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")]:
        monkeypatch.setenv(f"POSTGRES_{name}", os.environ.get(variable, "djasynctest"))
    monkeypatch.setenv("POSTGRES_DB", "postgres")
    sample = importlib.reload(importlib.import_module("tests.docs_examples.postgres_settings"))
    assert sample.DJASYNCTEST == {"TIMEOUT": 120}
    handler = ConnectionHandler(sample.DATABASES)
    try:
        with handler["default"].cursor() as cursor:
            cursor.execute("SHOW lock_timeout")
            assert cursor.fetchone() == ("10s",)
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone() == ("1min",)
    finally:
        handler.close_all()


def test_communicator() -> None:
    from tests.docs_examples.communicator import ItemsConsumerTests

    assert_passed(run_case(ItemsConsumerTests), 1)


def test_signup_hashing() -> None:
    from tests.docs_examples.signup_hashing import SignUpTests

    with pytest.warns(BlockingWarning) as caught:
        assert_passed(run_case(SignUpTests), 1)
    message = str(caught[0].message)
    assert "inside django's code" in message
    assert "Use a fast hasher in the test settings" in message


def test_frozen_time() -> None:
    from tests.docs_examples.frozen_time import FreezegunTests, TimeMachineTests

    assert_passed(run_case(FreezegunTests), 1)
    assert_passed(run_case(TimeMachineTests), 1)


def test_properties() -> None:
    from tests.docs_examples.properties import ExecutorTests, PriceTests

    assert_passed(run_case(PriceTests), 2)
    assert_passed(run_case(ExecutorTests), 1)
    assert Item.objects.count() == 0
