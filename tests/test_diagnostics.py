"""The diagnostics catch the real thing, name where it is, and stay quiet on clean tests."""

from __future__ import annotations

import asyncio
import gc
import http.server
import importlib
import importlib.util
import re
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.test import override_settings

from djasynctest import AsyncTestCase, _watchdog
from djasynctest._diagnostics import BlockingWarning, PendingTaskWarning
from tests.dbconfig import BACKEND
from tests.testapp.models import Item
from tests.utils import assert_passed, hang_in_a_query, leftover_rows, problems, run_case

# --- Blocking detector ----------------------------------------------------------


def test_blocking_view_fails_the_test_and_names_the_line() -> None:
    class Health(AsyncTestCase):
        async def test_health(self) -> None:
            response = await self.async_client.get("/health/slow/?seconds=0.3")
            self.assertEqual(response.status_code, 200)

    result = run_case(Health)
    [(_, text)] = result.failures
    held = re.search(r"LoopBlocked: The event loop was blocked for (\S+) s", text)
    assert held is not None, text
    assert 0.25 <= float(held[1]) < 1
    assert "(blocking_threshold is 0.1 s) in test_health" in text
    # The sampled stack ends in the view, at the line that blocked.
    assert 'tests/testapp/views.py", line' in text
    assert 'in slow_health\n    time.sleep(float(request.GET.get("seconds", "0.3")))' in text
    assert "await asyncio.to_thread(func)" in text


def test_blocking_in_the_test_itself_in_warn_mode() -> None:
    class Warned(AsyncTestCase):
        blocking_mode = "warn"
        blocking_threshold = 0.05

        async def test_sleeps(self) -> None:
            time.sleep(0.2)

    with pytest.warns(BlockingWarning) as caught:
        assert_passed(run_case(Warned), 1)
    [warning] = caught
    assert "in test_sleeps\n    time.sleep(0.2)" in str(warning.message)


def _spin_cpu(seconds: float) -> None:
    """Pure Python work: ``seconds`` of this thread's CPU time, however loaded the machine."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_cpu_bound_helper_is_reported_for_the_cpu_time_it_took() -> None:
    class Crunch(AsyncTestCase):
        async def test_crunches(self) -> None:
            _spin_cpu(0.15)

    [text] = problems(run_case(Crunch))
    held = re.search(r"LoopBlocked: The event loop was blocked for (\S+) s", text)
    assert held is not None, text
    # At least the CPU time it took (a busy machine adds no more than it waited for a CPU).
    assert 0.14 <= float(held[1]) < 1, text
    assert "in _spin_cpu\n    while time.thread_time() - start < seconds:" in text
    assert "in test_crunches\n    _spin_cpu(0.15)" in text


@pytest.fixture
def slow_server() -> Iterator[str]:
    """A local HTTP server on a thread of its own that answers after 0.15 s."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(0.15)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_sync_http_call_on_the_loop_is_reported_at_its_line(slow_server: str) -> None:
    class CallsOut(AsyncTestCase):
        async def test_fetches(self) -> None:
            with urllib.request.urlopen(slow_server) as response:
                self.assertEqual(response.status, 204)

    [text] = problems(run_case(CallsOut))
    held = re.search(r"LoopBlocked: The event loop was blocked for (\S+) s", text)
    assert held is not None, text
    assert 0.15 <= float(held[1]) < 1, text
    assert "in test_fetches\n    with urllib.request.urlopen(slow_server) as response:" in text


class _LoadedMachine:
    """Stands in for the kernel's count of how long the loop's thread waited for a CPU."""

    def __init__(self) -> None:
        self.waited = 0.0
        self.read_at = float("-inf")
        self.reading = 0.0

    def __call__(self) -> float:
        return self.waited

    def refresh(self, at: float) -> None:
        self.reading = self.waited
        self.read_at = at

    def close(self) -> None:
        pass


@pytest.mark.parametrize("waited_for_a_cpu", [0.0, 0.2])
def test_time_the_loop_waited_for_a_cpu_is_not_a_block(
    monkeypatch: pytest.MonkeyPatch, waited_for_a_cpu: float
) -> None:
    machine = _LoadedMachine()
    monkeypatch.setattr(_watchdog, "cpu_wait", lambda: machine)

    class Loaded(AsyncTestCase):
        async def test_held(self) -> None:
            time.sleep(0.25)
            # As the kernel would count it had the machine kept the thread from a CPU.
            machine.waited += waited_for_a_cpu

    texts = problems(run_case(Loaded))
    if waited_for_a_cpu:
        assert texts == []  # 0.05 s of its own: under the threshold
    else:
        [text] = texts
        assert "LoopBlocked: The event loop was blocked for 0.2" in text


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_loop_with_no_python_selector_is_timed_by_pings() -> None:
    import uvloop

    class OnUvloop(AsyncTestCase):
        loop_factory = staticmethod(uvloop.new_event_loop)

        async def test_sleeps(self) -> None:
            time.sleep(0.3)

    [text] = problems(run_case(OnUvloop))
    # A ping queued up to a ping interval (threshold / 4) after the block began.
    held = re.search(r"LoopBlocked: The event loop was blocked for at least (\S+) s", text)
    assert held is not None, text
    assert 0.3 - 0.1 / 4 <= float(held[1]) < 1, text
    assert "in test_sleeps\n    time.sleep(0.3)" in text


def test_block_whose_stack_was_not_sampled_only_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    # As when the watchdog thread cannot run while the loop is held.
    monkeypatch.setattr(_watchdog.LoopWatch, "look", lambda self, current: None)

    class Unsampled(AsyncTestCase):
        async def test_sleeps(self) -> None:
            time.sleep(0.2)

    with pytest.warns(BlockingWarning) as caught:
        assert_passed(run_case(Unsampled), 1)
    [warning] = caught
    text = re.sub(r"for 0\.\d+ s", "for 0.2xx s", str(warning.message))
    assert text == (
        "The event loop was blocked for 0.2xx s (blocking_threshold is 0.1 s) in test_sleeps "
        f"({__name__}.test_block_whose_stack_was_not_sampled_only_warns.<locals>.Unsampled."
        "test_sleeps), but the watchdog thread did not get to run while it was, so where is "
        "not known, nor whose code it was: so it warns instead of failing. Run the test again "
        "to see the line."
    )


def test_clean_and_sync_blocking_tests_are_not_reported() -> None:
    class Clean(AsyncTestCase):
        async def test_awaits(self) -> None:
            await asyncio.sleep(0.2)
            await Item.objects.acreate(name="quick")

        async def test_sync_view_blocks_the_db_thread_not_the_loop(self) -> None:
            response = await self.async_client.get("/health/slow-sync/?seconds=0.3")
            self.assertEqual(response.status_code, 200)

        def test_sync_test(self) -> None:
            time.sleep(0.2)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_passed(run_case(Clean), 3)


def test_blocking_detector_can_be_turned_off() -> None:
    class Off(AsyncTestCase):
        blocking_threshold = None

        async def test_sleeps(self) -> None:
            time.sleep(0.2)

    assert_passed(run_case(Off), 1)


def test_blocking_note_is_added_to_the_tests_own_error() -> None:
    class Both(AsyncTestCase):
        async def test_it(self) -> None:
            time.sleep(0.3)
            raise ValueError("own error")

    [(_, text)] = run_case(Both).errors
    assert "ValueError: own error" in text
    assert "The event loop was blocked for" in text


# --- Timeout --------------------------------------------------------------------------


def test_timeout_fails_with_every_pending_tasks_stack_and_rolls_back() -> None:
    class Forever(AsyncTestCase):
        timeout = 0.5

        async def test_waits_forever(self) -> None:
            await Item.objects.acreate(name="before the hang")
            self.helper = asyncio.create_task(self.helper_waits(), name="helper")
            await asyncio.Event().wait()

        async def helper_waits(self) -> None:
            await asyncio.Event().wait()

    start = time.monotonic()
    result = run_case(Forever)
    assert time.monotonic() - start < 5
    [(_, text)] = result.failures
    assert "TestTimeout: test_waits_forever" in text
    assert "did not finish within its timeout of 0.5 s" in text
    assert "in test_waits_forever\n    await asyncio.Event().wait()" in text
    assert "task helper:" in text
    assert "in helper_waits\n    await asyncio.Event().wait()" in text
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize("where", ["async", "sync"])
def test_timeout_interrupts_a_query_that_hangs_and_the_next_test_runs(where: str) -> None:
    counts: list[int] = []

    class Hung(AsyncTestCase):
        timeout = 0.5

        async def test_1_hangs_from_async_code(self) -> None:
            await Item.objects.acreate(name="before the hang")
            await sync_to_async(hang_in_a_query)()

        def test_1_hangs_from_sync_code(self) -> None:
            Item.objects.create(name="before the hang")
            hang_in_a_query()

        async def test_2_next(self) -> None:
            counts.append(await Item.objects.acount())

    start = time.monotonic()
    result = run_case(Hung, f"test_1_hangs_from_{where}_code", "test_2_next")
    assert time.monotonic() - start < 5
    [(_, text)] = result.failures
    assert f"TestTimeout: test_1_hangs_from_{where}_code" in text
    assert "did not finish within its timeout of 0.5 s" in text
    # The DB thread's stack names the line of the test's code that hangs.
    assert "the DB thread (any query it was running was interrupted):" in text
    assert "in hang_in_a_query\n    cursor.execute(sql)" in text
    assert not result.errors
    assert counts == [0]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_timeout_leaves_quick_tests_alone() -> None:
    class Quick(AsyncTestCase):
        timeout = 5

        async def test_it(self) -> None:
            await Item.objects.acount()

    assert_passed(run_case(Quick), 1)


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
def test_password_hashing_inside_django_warns_with_the_fast_hasher_fix() -> None:
    """Django's async auth hashes on the loop: not the project's code, so no failure."""

    class SignUp(AsyncTestCase):
        async def test_sign_up(self) -> None:
            user = await User.objects.acreate_user("ann", password="secret")
            self.assertTrue(await user.acheck_password("secret"))

    with pytest.warns(BlockingWarning) as caught:
        assert_passed(run_case(SignUp), 1)
    [warning] = caught
    message = str(warning.message)
    assert re.search(r"blocked for \S+ s \(blocking_threshold is 0.1 s\) in test_sign_up", message)
    assert "inside django's code" in message
    assert "await User.objects.acreate_user(" in message or "acheck_password(" in message
    assert (
        "Use a fast hasher in the test settings: PASSWORD_HASHERS = "
        '["django.contrib.auth.hashers.MD5PasswordHasher"].'
    ) in message
    assert warning.filename == __file__


@pytest.fixture
def slowlib(tmp_path: Path) -> Iterator[Any]:
    """An installed package (in a site-packages folder) with a blocking async API."""
    package = tmp_path / "site-packages" / "slowlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import time\n\n\n"
        "async def fetch():\n"
        "    time.sleep(0.3)\n\n\n"
        "def fetch_sync():\n"
        "    time.sleep(0.3)\n"
    )
    sys.path.insert(0, str(package.parent))
    try:
        yield importlib.import_module("slowlib")
    finally:
        sys.path.remove(str(package.parent))
        del sys.modules["slowlib"]


def test_block_inside_a_packages_coroutine_warns_naming_the_package(slowlib: Any) -> None:
    class UsesSlowlib(AsyncTestCase):
        async def test_fetch(self) -> None:
            await slowlib.fetch()

    with pytest.warns(BlockingWarning) as caught:
        assert_passed(run_case(UsesSlowlib), 1)
    message = str(caught[0].message)
    where = r"in test_fetch \(.*UsesSlowlib\.test_fetch\), inside slowlib's code\. While"
    assert re.search(where, message), message
    assert "    await slowlib.fetch()\n" in message
    assert (
        "The blocking call is slowlib's, which the test awaited, not the project's own: so it "
        "warns instead of failing. To silence it, add the module or function to "
        "blocking_allowed"
    ) in message


def test_blocking_call_the_project_makes_into_a_package_fails(slowlib: Any) -> None:
    class CallsSlowlib(AsyncTestCase):
        async def test_fetch(self) -> None:
            slowlib.fetch_sync()

    [(_, text)] = run_case(CallsSlowlib).failures
    assert "LoopBlocked: The event loop was blocked for" in text
    where = r"in test_fetch \(.*CallsSlowlib\.test_fetch\)\. While it was blocked"
    assert re.search(where, text), text


def test_block_while_python_imports_a_module_warns_naming_it(tmp_path: Path) -> None:
    """A library's lazy import (httpx loading httpcore) holds the loop once per process."""
    (tmp_path / "slow_to_import.py").write_text("import time\n\ntime.sleep(0.3)\n")
    sys.path.insert(0, str(tmp_path))

    class ImportsLazily(AsyncTestCase):
        async def test_imports(self) -> None:
            importlib.import_module("slow_to_import")

    try:
        with pytest.warns(BlockingWarning) as caught:
            assert_passed(run_case(ImportsLazily), 1)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("slow_to_import", None)
    message = str(caught[0].message)
    assert "ImportsLazily.test_imports), while Python imported slow_to_import." in message
    assert "Python was importing slow_to_import, which happens once per process" in message


def test_a_librarys_own_lazy_import_is_not_reported(slowlib: Any) -> None:
    """httpx imports httpcore when the first client is made: only the machine sets its length."""
    _give_slowlib_a_lazy_import(slowlib, 0.3)

    class MakesAClient(AsyncTestCase):
        async def test_client(self) -> None:
            slowlib.client()  # holds the loop for 0.3 s, importing slowlib.backend
            self.assertIn("slowlib.backend", sys.modules)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_passed(run_case(MakesAClient), 1)
    finally:
        sys.modules.pop("slowlib.backend", None)


def _give_slowlib_a_lazy_import(slowlib: Any, seconds: float) -> None:
    (Path(slowlib.__file__).parent / "backend.py").write_text(
        f"import time\n\ntime.sleep({seconds})\n"
    )
    Path(slowlib.__file__).write_text(
        Path(slowlib.__file__).read_text() + "\n\ndef client():\n    from slowlib import backend\n"
    )
    importlib.reload(slowlib)


def test_a_lazy_import_that_ends_near_the_threshold_is_not_the_codes_block(slowlib: Any) -> None:
    """httpx's first client: httpcore's import, then an SSL context, in one turn."""
    _give_slowlib_a_lazy_import(slowlib, 0.09)

    class MakesAClient(AsyncTestCase):
        async def test_client(self) -> None:
            slowlib.client()  # 0.09 s importing slowlib.backend,
            time.sleep(0.03)  # then the client's own set-up: 0.12 s in all

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_passed(run_case(MakesAClient), 1)
    finally:
        sys.modules.pop("slowlib.backend", None)


def test_a_block_beside_a_lazy_import_is_still_reported(slowlib: Any) -> None:
    _give_slowlib_a_lazy_import(slowlib, 0.1)

    class SleepsThenImports(AsyncTestCase):
        async def test_client(self) -> None:
            time.sleep(0.25)
            slowlib.client()

    try:
        [(_, text)] = run_case(SleepsThenImports).failures
    finally:
        sys.modules.pop("slowlib.backend", None)
    assert "LoopBlocked: The event loop was blocked for" in text
    assert "in test_client\n    time.sleep(0.25)\n" in text


def _render_report() -> None:
    time.sleep(0.3)


def test_blocking_allowed_exempts_modules_and_functions(slowlib: Any) -> None:
    class Allowed(AsyncTestCase):
        blocking_allowed = ("slowlib", f"{__name__}._render_report")

        async def test_package(self) -> None:
            await slowlib.fetch()

        async def test_function(self) -> None:
            _render_report()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_passed(run_case(Allowed), 2)


@pytest.mark.parametrize("value", ["slowlib", ["slowlib/x.py"], [""], [1]])
def test_bad_blocking_allowed_fails_at_class_creation(value: Any) -> None:
    with pytest.raises(TypeError) as info:
        type("Bad", (AsyncTestCase,), {"blocking_allowed": value})
    assert str(info.value) == (
        f"Bad.blocking_allowed is {value!r}; it must be a list of dotted names of modules or "
        "functions whose blocking calls are allowed, such as ['myapp.legacy', "
        "'myapp.utils.render_pdf']."
    )


# --- Leaks ------------------------------------------------------------------------------


def test_pending_task_is_reported_with_where_it_was_created() -> None:
    class Leaky(AsyncTestCase):
        task_creation_stacks = True

        async def test_starts_a_task(self) -> None:
            self.task = asyncio.create_task(asyncio.Event().wait(), name="forgotten")

    with pytest.warns(PendingTaskWarning) as caught:
        assert_passed(run_case(Leaky), 1)
    [warning] = caught
    message = str(warning.message)
    assert "task forgotten (" in message
    assert "created at:" in message
    assert "in test_starts_a_task\n    self.task = asyncio.create_task(" in message


def test_thread_left_running_is_reported() -> None:
    stop = threading.Event()

    class LeavesThread(AsyncTestCase):
        async def test_starts_a_thread(self) -> None:
            threading.Thread(target=stop.wait, name="forgotten-worker").start()

    try:
        with pytest.warns(PendingTaskWarning, match="thread 'forgotten-worker' is still running"):
            assert_passed(run_case(LeavesThread), 1)
    finally:
        stop.set()


@pytest.mark.skipif(
    BACKEND == "sqlite", reason="SQLite in memory is never closed by Django, nor need it be"
)
def test_connection_opened_off_the_db_thread_is_reported() -> None:
    opened: list[Any] = []

    def query() -> None:
        Item.objects.exists()
        opened.append(connections["default"])

    class OtherThread(AsyncTestCase):
        async def test_queries_from_a_thread(self) -> None:
            worker = threading.Thread(target=query, name="stray-worker")
            worker.start()
            await asyncio.to_thread(worker.join)

    try:
        with pytest.warns(PendingTaskWarning) as caught:
            assert_passed(run_case(OtherThread), 1)
    finally:
        opened[0].connection.close()  # the driver's own connection: the thread is gone
    [warning] = caught
    assert (
        "database connection 'default', opened by thread 'stray-worker' outside the "
        "test's transaction, is still open"
    ) in str(warning.message)


@pytest.mark.parametrize("close", ["driver", "django"])
def test_connection_its_thread_closed_is_not_reported(close: str) -> None:
    """Closed at the driver, or by Django (a no-op for SQLite in memory): no leak."""

    opened: list[Any] = []

    def query() -> None:
        Item.objects.exists()
        opened.append(connections["default"].connection)
        if close == "driver":
            connections["default"].connection.close()
        else:
            connections.close_all()

    class ClosesItsConnection(AsyncTestCase):
        async def test_queries_from_a_thread(self) -> None:
            await asyncio.to_thread(query)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_passed(run_case(ClosesItsConnection), 1)
    finally:
        opened[0].close()  # SQLite in memory: Django left it open, as it does on purpose


def test_leaks_are_shown_by_default_at_the_tests_line_with_where_the_task_was_made() -> None:
    class Leaky(AsyncTestCase):
        async def test_starts_a_task(self) -> None:
            self.task = asyncio.create_task(asyncio.Event().wait(), name="forgotten")

    with warnings.catch_warnings(record=True) as caught:
        # Python's default filters (no -W option): ResourceWarning is hidden.
        warnings.resetwarnings()
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
            warnings.filterwarnings("ignore", category=hidden)
        warnings.filterwarnings("ignore", category=ResourceWarning)
        assert_passed(run_case(Leaky), 1)
    [warning] = caught
    assert warning.category is PendingTaskWarning
    assert warning.filename == __file__
    assert warning.lineno == Leaky.test_starts_a_task.__code__.co_firstlineno
    line = Leaky.test_starts_a_task.__code__.co_firstlineno + 1
    assert "task forgotten (<coroutine object Event.wait at " in str(warning.message)
    assert f"  created at {__file__}:{line}, in test_starts_a_task\n" in str(warning.message)


def test_each_kind_of_leak_check_can_be_switched_off() -> None:
    stop = threading.Event()

    class OnlyTasks(AsyncTestCase):
        leak_checks = ["tasks"]

        async def test_starts_a_thread(self) -> None:
            threading.Thread(target=stop.wait, name="unwatched-worker").start()

    class NoChecks(AsyncTestCase):
        leak_checks = ()

        async def test_starts_a_task(self) -> None:
            self.task = asyncio.create_task(asyncio.Event().wait())

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_passed(run_case(OnlyTasks), 1)
            assert_passed(run_case(NoChecks), 1)
    finally:
        stop.set()


def test_unfinished_async_generator_is_not_reported() -> None:
    """asyncio closes an async generator that was dropped half-way; that task is not a leak."""

    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)

    class Streams(AsyncTestCase):
        # gc.collect() of the whole test process can hold the loop past the threshold.
        blocking_threshold = None

        async def test_reads_one_item(self) -> None:
            items = stream()
            self.assertEqual(await anext(items), 1)
            del items
            gc.collect()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_passed(run_case(Streams), 1)
