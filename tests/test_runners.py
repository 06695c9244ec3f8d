"""The same user test modules under every runner, in subprocesses, with the same results."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clientlib import assert_one_loop_per_process, install_client
from tests.dbconfig import BACKEND

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "tests" / "runnerproject"
EXPECTED_TESTS = 106  # tests/runnerproject/cases/test_orders.py

# Runner flags do not depend on the database: test them once, on SQLite in memory.
flags_once = pytest.mark.skipif(
    BACKEND != "sqlite", reason="runner flags are tested on SQLite in memory"
)


@contextlib.contextmanager
def importable(*folders: Path) -> Iterator[None]:
    """Let the processes that run() starts import packages from ``folders``."""
    os.environ["PYTHONPATH"] = os.pathsep.join(map(str, folders))
    try:
        yield
    finally:
        del os.environ["PYTHONPATH"]


def run(
    *args: str, stdin: str | None = None, settings: str = "tests.runnerproject.settings"
) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository with only DJANGO_SETTINGS_MODULE set for Django."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_")) and key != "PYTHONPATH"
    }
    env["DJANGO_SETTINGS_MODULE"] = settings
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    env["DJASYNCTEST_NAME_SUFFIX"] = os.environ.get("DJASYNCTEST_NAME_SUFFIX", "") + "_" + worker
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.pathsep.join([os.environ["PYTHONPATH"], str(ROOT)])
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_unittest_ok(process: subprocess.CompletedProcess[str], count: int) -> None:
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert re.search(rf"^Ran {count} tests? in ", output, re.MULTILINE), output
    assert re.search(r"^OK$", output, re.MULTILINE), output
    assert "Traceback" not in output, output
    assert "Exception ignored" not in output, output


def test_unittest_discover_sets_up_django_and_databases() -> None:
    process = run("-m", "unittest", "discover", "-s", "tests/runnerproject/cases", "-t", ".")
    assert_unittest_ok(process, EXPECTED_TESTS)


@pytest.mark.parametrize(
    "flags",
    [(), ("--parallel", "2"), ("--shuffle", "7"), ("--reverse",)],
    ids=["plain", "parallel", "shuffle", "reverse"],
)
def test_manage_py_test(flags: tuple[str, ...]) -> None:
    process = run(
        str(PROJECT / "manage.py"), "test", "--noinput", "tests.runnerproject.cases", *flags
    )
    assert_unittest_ok(process, EXPECTED_TESTS)


@pytest.mark.parametrize("flags", [(), ("-n", "2")], ids=["plain", "xdist"])
def test_pytest_django(flags: tuple[str, ...]) -> None:
    process = run(
        "-m", "pytest", "tests/runnerproject/cases", "-p", "no:cacheprovider", "-q", *flags
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert re.search(rf"^{EXPECTED_TESTS} passed in ", output, re.MULTILINE), output


def test_parallel_workers_really_run_in_parallel() -> None:
    """The instances pickle and run in two worker processes (not one, not the parent)."""
    process = run(
        str(PROJECT / "manage.py"),
        "test",
        "--noinput",
        "tests.runnerproject.cases",
        "--parallel",
        "2",
        "-v",
        "2",
    )
    assert_unittest_ok(process, EXPECTED_TESTS)
    assert "Using shuffle seed" not in process.stderr
    assert re.search(r"Cloning test database for alias 'default'", process.stderr), process.stderr


@flags_once
@pytest.mark.parametrize(
    ("flags", "count"),
    [
        (("--debug-sql",), EXPECTED_TESTS),
        (("--buffer",), EXPECTED_TESTS),
        (("--failfast",), EXPECTED_TESTS),
        (("--timing",), EXPECTED_TESTS),
        (("--debug-mode",), EXPECTED_TESTS),
        (("--keepdb",), EXPECTED_TESTS),
        (("-k", "test_items"), 1),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else str(value),
)
def test_manage_py_test_flags(flags: tuple[str, ...], count: int) -> None:
    process = run(
        str(PROJECT / "manage.py"), "test", "--noinput", "tests.runnerproject.cases", *flags
    )
    assert_unittest_ok(process, count)
    if "--keepdb" in flags:
        again = run(
            str(PROJECT / "manage.py"), "test", "--noinput", "tests.runnerproject.cases", *flags
        )
        assert_unittest_ok(again, count)
        assert "Using existing test database" in again.stderr


@flags_once
@pytest.mark.parametrize(
    ("flags", "count"),
    [(("-k", "test_items"), 1), (("-f",), EXPECTED_TESTS), (("-b",), EXPECTED_TESTS)],
    ids=["-k", "-f", "-b"],
)
def test_unittest_flags(flags: tuple[str, ...], count: int) -> None:
    process = run(
        "-m", "unittest", "discover", "-s", "tests/runnerproject/cases", "-t", ".", *flags
    )
    assert_unittest_ok(process, count)


@flags_once
@pytest.mark.parametrize(
    ("flags", "count"),
    [
        (("-k", "test_items"), 1),
        (("-x",), EXPECTED_TESTS),
        (("--create-db",), EXPECTED_TESTS),
        (("--reuse-db",), EXPECTED_TESTS),
    ],
    ids=["-k", "-x", "--create-db", "--reuse-db"],
)
def test_pytest_flags(flags: tuple[str, ...], count: int) -> None:
    process = run(
        "-m", "pytest", "tests/runnerproject/cases", "-p", "no:cacheprovider", "-q", *flags
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert re.search(rf"^{count} passed", output, re.MULTILINE), output


def _failing_package(tmp_path: Path) -> Path:
    package = tmp_path / "failing"
    package.mkdir()
    (package / "__init__.py").write_text("import djasynctest  # noqa: F401\n")
    (package / "test_fails.py").write_text(
        "from djasynctest import AsyncTestCase\n"
        "from tests.testapp.models import Item\n\n\n"
        "class Fails(AsyncTestCase):\n"
        "    async def test_fails(self):\n"
        "        marker = 'in the failing test'\n"
        "        await Item.objects.acreate(name=marker)\n"
        "        assert await Item.objects.acount() == 2\n\n"
        "    async def test_passes(self):\n"
        "        self.assertEqual(await Item.objects.acount(), 0)\n"
    )
    return package


@flags_once
def test_failing_test_is_reported_the_same_by_every_runner(tmp_path: Path) -> None:
    """A failure inside an async test: unittest's exit code and summary, pytest's."""
    package = _failing_package(tmp_path)
    with importable(tmp_path):
        unit = run("-m", "unittest", "discover", "-s", str(package), "-t", str(tmp_path))
        manage = run(str(PROJECT / "manage.py"), "test", "--noinput", "failing")
        pytest_run = run(
            "-m", "pytest", str(package), "-p", "no:cacheprovider", "-p", "no:asyncio", "-q"
        )
    for process in (unit, manage):
        output = process.stdout + process.stderr
        assert process.returncode == 1, output
        assert re.search(r"^FAILED \(failures=1\)$", output, re.MULTILINE), output
        assert "assert await Item.objects.acount() == 2" in output
    output = pytest_run.stdout + pytest_run.stderr
    assert pytest_run.returncode == 1, output
    assert re.search(r"^1 failed, 1 passed", output, re.MULTILINE), output


def test_soak_of_5000_tests_in_two_workers_leaves_resources_flat(tmp_path: Path) -> None:
    """Threads, file descriptors, server connections and memory after 5,000 tests."""
    record = tmp_path / "samples.txt"
    os.environ["SOAK_RECORD"] = str(record)
    try:
        process = run(
            str(PROJECT / "manage.py"),
            "test",
            "--noinput",
            "--parallel",
            "2",
            "tests.runnerproject.soak",
        )
    finally:
        del os.environ["SOAK_RECORD"]
    assert_unittest_ok(process, 5000)
    samples: dict[int, list[list[int]]] = {}
    for line in record.read_text().splitlines():
        pid, *values = map(int, line.split())
        samples.setdefault(pid, []).append(values)
    assert len(samples) == 2, "both workers ran tests"
    for runs in samples.values():
        (first_run, threads, fds, rss, server), *_, (last_run, *last) = sorted(runs)
        assert first_run == 100
        assert last_run >= 1000, f"each worker ran a fair share: {last_run}"
        assert last[:2] == [threads, fds], (runs[0], runs[-1])
        assert last[3] == server, "server connections"
        assert last[2] - rss < 4_000, f"RSS grew by {last[2] - rss} KiB"


@flags_once
def test_pdb_stops_in_the_failing_async_test_frame(tmp_path: Path) -> None:
    """manage.py test --pdb: the debugger opens on the test's own frame, with its locals."""
    _failing_package(tmp_path)
    with importable(tmp_path):
        process = run(
            str(PROJECT / "manage.py"),
            "test",
            "--noinput",
            "--pdb",
            "failing",
            stdin="where\np marker\ncontinue\n",
        )
    output = process.stdout + process.stderr
    assert "Opening PDB:" in output, output
    assert "(Pdb) " in output, output
    assert "'in the failing test'" in output, output
    assert re.search(r"^> .*test_fails\.py\(\d+\)test_fails\(\)$", output, re.MULTILINE), output
    assert process.returncode == 1, output


@flags_once
def test_pytest_last_failed_reruns_only_the_failing_async_test(tmp_path: Path) -> None:
    package = _failing_package(tmp_path)
    args = (
        "-m",
        "pytest",
        str(package),
        "-q",
        "-p",
        "no:asyncio",
        "-o",
        "addopts=",
        "-o",
        f"cache_dir={tmp_path / 'cache'}",
    )
    with importable(tmp_path):
        first = run(*args)
        again = run(*args, "--lf")
    assert re.search(r"^1 failed, 1 passed", first.stdout, re.MULTILINE), first.stdout
    assert re.search(r"^1 failed, 1 deselected", again.stdout, re.MULTILINE), again.stdout


@flags_once
def test_debug_sql_prints_the_queries_of_the_failing_async_test(tmp_path: Path) -> None:
    """manage.py test --debug-sql: the runner's flag reaches the DB thread's connections."""
    _failing_package(tmp_path)
    with importable(tmp_path):
        process = run(str(PROJECT / "manage.py"), "test", "--noinput", "--debug-sql", "failing")
    output = process.stdout + process.stderr
    assert process.returncode == 1, output
    failure = output[output.index("FAIL: test_fails") :]
    assert re.search(r'INSERT INTO "testapp_item".*in the failing test', failure, re.DOTALL), output
    assert re.search(r'SELECT COUNT\(\*\) AS "__count"\s+FROM "testapp_item"', failure), output


# Test modules of a project whose classes share one global client (and a view
# that uses it) with loop_scope = "session".
SESSION_MODULE = """
import asyncio

from django.test import override_settings

import fakeclient
from djasynctest import AsyncTestCase
from tests.testapp.models import Item


@override_settings(ROOT_URLCONF="clienturls")
class UsesTheClient{n}(AsyncTestCase):
    loop_scope = "session"

    async def test_client_view_and_orm(self):
        self.assertEqual(await fakeclient.CLIENT.ping(), "PONG")
        # The loop's default executor (getaddrinfo uses it), joined when the loop closes.
        await asyncio.get_running_loop().run_in_executor(None, str)
        await Item.objects.acreate(name="{n}")
        response = await self.async_client.get("/ping/")
        self.assertEqual(response.json(), {{"pong": "PONG", "items": 1}})

    def test_sync(self):
        self.assertEqual(Item.objects.count(), 0)
"""


@pytest.mark.parametrize(
    "runner",
    ["unittest", "manage.py --parallel 2", "pytest -n 2"],
)
def test_session_scope_one_loop_per_process_closed_after_the_last_test(
    tmp_path: Path, runner: str
) -> None:
    """A global client connects once per process (per worker), and its loop closes
    cleanly after the last test, under every runner."""
    package = tmp_path / "sessionclient"
    package.mkdir()
    (package / "__init__.py").write_text("import djasynctest  # noqa: F401\n")
    for n in range(4):
        (package / f"test_module_{n}.py").write_text(SESSION_MODULE.format(n=n))
    record = tmp_path / "connections.txt"
    os.environ["CLIENT_RECORD"] = str(record)
    try:
        with importable(*install_client(tmp_path)):
            if runner == "unittest":
                process = run("-m", "unittest", "discover", "-s", str(package), "-t", str(tmp_path))
            elif runner.startswith("manage.py"):
                process = run(
                    str(PROJECT / "manage.py"),
                    "test",
                    "--noinput",
                    "--parallel",
                    "2",
                    "sessionclient",
                )
            else:
                process = run(
                    "-m",
                    "pytest",
                    str(package),
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "no:asyncio",
                    "-q",
                    "-p",
                    "xdist",
                    "-n",
                    "2",
                )
    finally:
        del os.environ["CLIENT_RECORD"]
    output = process.stdout + process.stderr
    if runner.startswith("pytest"):
        assert process.returncode == 0, output
        assert re.search(r"^8 passed in ", output, re.MULTILINE), output
    else:
        assert_unittest_ok(process, 8)
    for noise in ("Task was destroyed", "Event loop is closed", "Exception ignored"):
        assert noise not in output
    assert_one_loop_per_process(record, {"global"})
