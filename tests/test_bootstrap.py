"""Django setup and test databases under plain unittest, in subprocesses."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dbconfig import BACKEND
from tests.test_runners import ROOT, assert_unittest_ok, run


def _python(code: str, **env: str) -> str:
    process = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        env={**_without_django_settings(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return process.stdout.strip()


def test_import_sets_django_up_when_settings_are_named() -> None:
    code = "import djasynctest, django.apps; print(django.apps.apps.ready)"
    assert _python(code, DJANGO_SETTINGS_MODULE="tests.settings") == "True"


def test_import_has_no_side_effect_without_settings() -> None:
    code = (
        "import djasynctest, django.apps, django.conf; "
        "print(django.apps.apps.ready, django.conf.settings.configured)"
    )
    assert _python(code) == "False False"


def _without_django_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}


def test_unittest_without_settings_is_one_error_that_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "test_nosettings.py").write_text(
        "from djasynctest import AsyncTestCase\n"
        "\n"
        "\n"
        "class Orders(AsyncTestCase):\n"
        "    async def test_it(self):\n"
        "        pass\n"
    )
    process = subprocess.run(
        [sys.executable, "-W", "error", "-m", "unittest", "test_nosettings"],
        cwd=tmp_path,
        env=_without_django_settings(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode != 0  # 5 from Python 3.12 on: "Ran 0 tests"
    # Nothing else: no traceback of Django's, none of the DB thread's at exit.
    assert re.sub(r" in \d+\.\d+s$", " in ...", process.stderr, flags=re.MULTILINE) == (
        f"E\n{'=' * 70}\nERROR: setUpClass (test_nosettings.Orders)\n{'-' * 70}\n"
        "django.core.exceptions.ImproperlyConfigured: djasynctest runs tests with Django's "
        "settings, and none are configured: set the environment variable DJANGO_SETTINGS_MODULE "
        "to the project's settings module, as in DJANGO_SETTINGS_MODULE=mysite.settings python "
        f"-m unittest.\n\n{'-' * 70}\nRan 0 tests in ...\n\nFAILED (errors=1)\n"
    )


def _database_exists(name: str) -> bool:
    if BACKEND == "postgres":
        from django.db import connection

        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return cursor.fetchone() is not None
    return Path(name).exists()


@pytest.mark.skipif(BACKEND == "sqlite", reason="an in-memory database leaves nothing to check")
def test_unittest_creates_test_database_and_destroys_it_at_exit(tmp_path: Path) -> None:
    record = tmp_path / "name.txt"
    os.environ["RECORD_TO"] = str(record)
    try:
        process = run(
            "-m", "unittest", "discover", "-s", "tests/runnerproject/bootstrap", "-t", "."
        )
    finally:
        del os.environ["RECORD_TO"]
    assert_unittest_ok(process, 1)
    name = record.read_text()
    assert "test" in name
    assert not _database_exists(name)


def _items_in(name: str) -> int:
    if BACKEND == "postgres":
        import psycopg

        with psycopg.connect(
            dbname=name,
            host=os.environ.get("PGHOST", "localhost"),
            user=os.environ.get("PGUSER", "djasynctest"),
            password=os.environ.get("PGPASSWORD", "djasynctest"),
        ) as connection:
            row = connection.execute("SELECT count(*) FROM testapp_item").fetchone()
    else:
        import sqlite3

        with contextlib.closing(sqlite3.connect(name)) as connection:
            row = connection.execute("SELECT count(*) FROM testapp_item").fetchone()
    assert row is not None
    return int(row[0])


INTERRUPT_RUNS = {
    "unittest": ("-m", "unittest", "tests.runnerproject.interrupt.test_interrupted"),
    "manage.py": (
        "tests/runnerproject/manage.py",
        "test",
        "--noinput",
        "--parallel",
        "1",
        "tests.runnerproject.interrupt",
    ),
    "manage.py --keepdb": (
        "tests/runnerproject/manage.py",
        "test",
        "--noinput",
        "--keepdb",
        "tests.runnerproject.interrupt",
    ),
    "pytest": ("-m", "pytest", "tests/runnerproject/interrupt", "-p", "no:cacheprovider", "-q"),
}


@pytest.mark.skipif(BACKEND == "sqlite", reason="an in-memory database leaves nothing to check")
@pytest.mark.parametrize("runner", list(INTERRUPT_RUNS))
@pytest.mark.parametrize("scope", ["test", "session"])
def test_ctrl_c_stops_the_run_and_the_test_database_is_dropped_or_kept_clean(
    tmp_path: Path, runner: str, scope: str
) -> None:
    record = tmp_path / "name.txt"
    os.environ["RECORD_TO"] = str(record)
    os.environ["LOOP_SCOPE"] = scope
    try:
        process = run(*INTERRUPT_RUNS[runner])
    finally:
        del os.environ["RECORD_TO"]
        del os.environ["LOOP_SCOPE"]
    output = process.stdout + process.stderr
    # unittest and Django let KeyboardInterrupt end the process; pytest reports it.
    assert process.returncode == (2 if runner == "pytest" else -signal.SIGINT), output
    assert "KeyboardInterrupt" in output, output
    name = record.read_text()
    assert "test" in name, "the run went on after Ctrl-C"
    if runner == "manage.py --keepdb":
        assert _database_exists(name)
        assert _items_in(name) == 0, "the interrupted test's rows must be rolled back"
    else:
        assert not _database_exists(name), output
    # The loop, whichever its scope, was closed with the run.
    for noise in ("Task was destroyed", "Event loop is closed", "Exception ignored"):
        assert noise not in output
