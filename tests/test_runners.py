"""The same user test modules under every runner, in subprocesses, with the same results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "tests" / "runnerproject"
EXPECTED_TESTS = 106  # tests/runnerproject/cases/test_orders.py


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository with only DJANGO_SETTINGS_MODULE set for Django."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_")) and key != "PYTHONPATH"
    }
    env["DJANGO_SETTINGS_MODULE"] = "tests.runnerproject.settings"
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=ROOT,
        env=env,
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
    process = run(str(PROJECT / "manage.py"), "test", "tests.runnerproject.cases", *flags)
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
        "tests.runnerproject.cases",
        "--parallel",
        "2",
        "-v",
        "2",
    )
    assert_unittest_ok(process, EXPECTED_TESTS)
    assert "Using shuffle seed" not in process.stderr
    assert re.search(r"Cloning test database for alias 'default'", process.stderr), process.stderr
