"""Test sessions. ``nox -t ci`` runs what CI runs (the test suite on a slice of the
matrix, conformance, lint, typing, docs); ``nox -s tests`` runs the whole matrix that
this machine can run.

Pythons come from PATH; under pyenv, every installed 3.11+ version is made
visible. A Python that is not found, or a PostgreSQL server the tests cannot
connect to (PGHOST, PGPORT, PGUSER, PGPASSWORD), skips its sessions with a message
that says why (set DJASYNCTEST_REQUIRE_POSTGRES=1 to fail instead, as CI does).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

PYTHONS = ["3.11", "3.12", "3.13", "3.14"]
DJANGOS = {"5.2": "django>=5.2,<6.0", "6.0": "django>=6.0,<6.1", "6.1": "django>=6.1,<6.2"}
DATABASES = ["sqlite", "sqlite-file", "postgres"]
NEWEST_DJANGO = "6.1"
ONE_PYTHON = "3.13"


def _in_ci_slice(python: str, django: str, db: str) -> bool:
    """CI's representative slice: every Python on the newest Django it supports, each
    Django that leaves out on Python 3.13 (SQLite in memory), and PostgreSQL on one pair.
    (SQLite in a file and the other pairs are in the whole matrix, nox -s tests.)"""
    if db == "postgres":
        return (python, django) == (ONE_PYTHON, NEWEST_DJANGO)
    newest = {_newest_django_for(each) for each in PYTHONS}
    return db == "sqlite" and (
        django == _newest_django_for(python) or (python == ONE_PYTHON and django not in newest)
    )


def _newest_django_for(python: str) -> str:
    return "5.2" if python == "3.11" else NEWEST_DJANGO


MATRIX = [
    nox.param(python, django, db, tags=["ci"] if _in_ci_slice(python, django, db) else [])
    for python in PYTHONS
    for django in DJANGOS
    # Django's own support: 6.0 and later need Python 3.12+.
    if not (django >= "6.0" and python == "3.11")
    for db in DATABASES
]


def _pyenv_version() -> str | None:
    """Every installed pyenv CPython 3.11+, newest patch of each, for PYENV_VERSION."""
    if not shutil.which("pyenv"):
        return None
    out = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    newest: dict[str, tuple[int, ...]] = {}
    for version in out:
        parts = version.split(".")
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            continue
        numbers = tuple(int(part) for part in parts)
        minor = f"{numbers[0]}.{numbers[1]}"
        if minor in PYTHONS and numbers > newest.get(minor, ()):
            newest[minor] = numbers
    return ":".join(".".join(map(str, v)) for _, v in sorted(newest.items())) or None


if not os.environ.get("PYENV_VERSION") and (_found := _pyenv_version()):
    os.environ["PYENV_VERSION"] = _found


def _postgres_problem(session: nox.Session) -> str | None:
    """Why the tests cannot connect to PostgreSQL, in libpq's or the server's own words
    (psycopg's message: "password authentication failed for user ..."); None if they can."""
    # Connects as tests/dbconfig.py does: PGHOST, PGUSER and PGPASSWORD with its
    # defaults; libpq reads PGPORT (and the rest) itself.
    probe = (
        "import os, psycopg\n"
        "try:\n"
        "    psycopg.connect(dbname='postgres', host=os.environ.get('PGHOST', 'localhost'),"
        " user=os.environ.get('PGUSER', 'djasynctest'),"
        " password=os.environ.get('PGPASSWORD', 'djasynctest'), connect_timeout=3).close()\n"
        "except psycopg.Error as error:\n"
        "    print(' '.join(str(error).split()))\n"
    )
    # None when nothing runs (--install-only).
    output = session.run("python", "-c", probe, silent=True, log=False) or ""
    return output.strip() or None


def _postgres_skip_message(problem: str) -> str:
    host = os.environ.get("PGHOST", "localhost")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "djasynctest")
    end = "" if problem.endswith((".", "?", "!")) else "."
    return (
        f"Cannot connect to PostgreSQL as the tests do (host {host}, port {port}, user {user}): "
        f"{problem}{end} Point the tests at a server, with a role that may create databases, "
        "through PGHOST, PGPORT, PGUSER and PGPASSWORD (defaults localhost, 5432, djasynctest, "
        "djasynctest), or set one up as .ci/run does."
    )


def _skip_without_postgres(session: nox.Session, problem: str) -> None:
    message = _postgres_skip_message(problem)
    if os.environ.get("DJASYNCTEST_REQUIRE_POSTGRES"):
        session.error(message)
    session.skip(message)


def _install(session: nox.Session, django: str, db: str) -> None:
    packages = [DJANGOS[django], "-e", ".", "-r", "tests/requirements.txt"]
    if db == "postgres":
        packages.append("psycopg[binary]>=3.1")
    session.install(*packages)


@nox.session
@nox.parametrize(("python", "django", "db"), MATRIX)
def tests(session: nox.Session, django: str, db: str) -> None:
    """The library's test suite on one Python, one Django and one database."""
    _install(session, django, db)
    if db == "postgres" and (problem := _postgres_problem(session)):
        _skip_without_postgres(session, problem)
    # Two workers where there are two CPUs: most of the suite's time is in
    # subprocesses (runners, the pytest plugin's projects), which share nothing.
    # On PostgreSQL one: the two workers share the server, and the tests that
    # end a stuck DB thread's connections from outside want it to themselves.
    workers = ["-n", "2"] if (os.cpu_count() or 1) >= 2 and db != "postgres" else []
    session.run(
        "python",
        "-W",
        "error",
        "-m",
        "pytest",
        *workers,
        *_ci_trim(session.python, django, db),
        *session.posargs,
        env={"DJASYNCTEST_DB": db, "PYTHONDEVMODE": "1"},
    )


# The tests that run the runners and the pytest plugin in subprocesses: most of the
# suite's time. Every Python runs them on the newest Django it supports (3.11 on the
# oldest); the sessions of CI's slice that add the other Djangos on Python 3.13 leave
# them out (the whole matrix runs them on those Djangos in its other sessions).
SUBPROCESS_TESTS = ["tests/test_runners.py", "tests/test_pytest_plugin.py"]


def _ci_trim(python: object, django: str, db: str) -> list[str]:
    if python == ONE_PYTHON and django != _newest_django_for(ONE_PYTHON) and db == "sqlite":
        return [f"--ignore={path}" for path in SUBPROCESS_TESTS]
    return []


@nox.session(python=ONE_PYTHON)
@nox.parametrize("db", [nox.param("sqlite", tags=["ci"]), "postgres"])
def order(session: nox.Session, db: str) -> None:
    """The library's and the example's suites, shuffled (one seed, or those given) and
    reversed; CI runs it on SQLite (its PostgreSQL session runs the usual order)."""
    _install(session, NEWEST_DJANGO, db)
    session.install("-r", "examples/shop/requirements.txt")
    if db == "postgres" and (problem := _postgres_problem(session)):
        _skip_without_postgres(session, problem)
    session.run("python", "tests/order.py", *session.posargs, env={"DJASYNCTEST_DB": db})


@nox.session(python=ONE_PYTHON, tags=["ci"])
def release(session: nox.Session) -> None:
    """Build the sdist and wheel; install the wheel in a clean venv; run a smoke test."""
    session.install("build>=1.2")
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    version = re.search(
        r'^__version__ = "(.+)"$', Path("src/djasynctest/__init__.py").read_text(), re.MULTILINE
    )
    assert version is not None
    wheel = dist / f"djasynctest-{version[1]}-py3-none-any.whl"
    sdist = dist / f"djasynctest-{version[1]}.tar.gz"
    if not (wheel.is_file() and sdist.is_file()):
        session.error(f"expected {wheel.name} and {sdist.name} in {dist}")
    with zipfile.ZipFile(wheel) as archive:
        if "djasynctest/py.typed" not in archive.namelist():
            session.error("the wheel has no py.typed")
    clean = tmp / "clean-venv"
    shutil.rmtree(clean, ignore_errors=True)
    session.run("python", "-m", "venv", str(clean))
    python = str(clean / "bin" / "python")
    session.run(python, "-m", "pip", "install", "-q", str(wheel), external=True)
    session.run(python, "-c", "import djasynctest; print(djasynctest.__version__)", external=True)
    session.chdir("tests/smoke")
    session.run(
        python,
        "-W",
        "error",
        "-m",
        "unittest",
        "-v",
        "test_smoke",
        env={"DJANGO_SETTINGS_MODULE": "smoke_settings"},
        external=True,
    )


@nox.session(python=None)
def example(session: nox.Session) -> None:
    """The example project's async test suites, on SQLite, as a user runs them: the
    unittest classes under manage.py test, the pytest-style modules under pytest."""
    session.install("-e", ".", "-r", "examples/shop/requirements.txt")
    session.chdir("examples/shop")
    session.run("python", "-W", "error", "manage.py", "test", *session.posargs)
    session.run(
        "python",
        "-W",
        "error",
        "-m",
        "pytest",
        "orders/tests/test_pytest_style.py",
        "orders/tests/test_pytest_scoped.py",
        "orders/tests/test_pytest_live.py",
    )


@nox.session(python=None, tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=None, tags=["ci"])
def docs(session: nox.Session) -> None:
    """Build the documentation; warnings and broken references fail."""
    session.install("-e", ".", "-r", "docs/requirements.txt")
    session.run(
        "python",
        "-m",
        "sphinx",
        "-b",
        "html",
        "-n",
        "-W",
        "--keep-going",
        "docs",
        "docs/_build/html",
    )


@nox.session(python=ONE_PYTHON, tags=["ci"])
@nox.parametrize("django", list(DJANGOS))
def conformance(session: nox.Session, django: str) -> None:
    """Django's own tests with our classes swapped in (see tests/conformance): its whole
    suite on the newest Django, its test-framework apps on the others."""
    # tblib: the parallel runner sends failures' tracebacks between processes.
    session.install(DJANGOS[django], "-e", ".", "pip", "tblib>=3")
    whole = ["--all"] if django == NEWEST_DJANGO else []
    session.run("python", "tests/conformance/run.py", *whole, *session.posargs)


@nox.session(python=ONE_PYTHON, tags=["ci"])
def thirdparty(session: nox.Session) -> None:
    """Published suites of popular packages (tests/conformance/thirdparty.py), as published
    and with our classes swapped in: under Django's runner and under pytest-django."""
    # pip: the script downloads the packages' sources with it.
    session.install(DJANGOS[NEWEST_DJANGO], "-e", ".", "pip", "pytest>=8.2")
    script = "tests/conformance/thirdparty.py"
    requirements = session.run("python", script, "--requirements", *session.posargs, silent=True)
    assert isinstance(requirements, str)
    session.install(*requirements.split("\n")[:-1])
    session.run("python", script, *session.posargs)


@nox.session(python=PYTHONS[1:], tags=["ci"])
def asyncbackend(session: nox.Session) -> None:
    """django-async-backend's connections inside the test's transaction
    (tests/test_asyncbackend.py, and its how-to's sample): its engine, Django 6.1,
    PostgreSQL, on each Python it supports (3.12+)."""
    session.install(
        DJANGOS[NEWEST_DJANGO],
        "-e",
        ".",
        "-r",
        "tests/requirements.txt",
        "psycopg[binary,pool]>=3.1",
        "django-async-backend>=6.1,<6.2",
    )
    if problem := _postgres_problem(session):
        _skip_without_postgres(session, problem)
    session.run(
        "python",
        "-W",
        "error",
        "-m",
        "pytest",
        "tests/test_asyncbackend.py",
        # The how-to's samples (the rest of test_docs.py runs in the other sessions).
        "tests/test_docs.py::test_async_backend",
        "tests/test_docs.py::test_async_backend_settings",
        *session.posargs,
        env={"DJASYNCTEST_DB": "postgres-async-backend", "PYTHONDEVMODE": "1"},
    )


@nox.session(python=ONE_PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark (bench/run.py): per-test cost next to Django's TestCase, and more, on
    SQLite in memory, then (shorter) on PostgreSQL when a server is reachable; and the
    blocking detector on a quiet and on a loaded machine (bench/blocking.py)."""
    # pip, and django-filter's requirements: its published suite is timed too.
    session.install(
        DJANGOS["6.1"],
        "-e",
        ".",
        "-r",
        "tests/requirements.txt",
        "psycopg[binary]>=3.1",
        "pip",
        "djangorestframework==3.18.3",
        "pytz",
    )
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/plot.py")
    session.run("python", "bench/blocking.py")
    if (problem := _postgres_problem(session)) is None:
        postgres = ["--quick", "--json", "bench/results/postgres.json"]
        session.run(
            "python",
            "bench/run.py",
            *postgres,
            env={"DJASYNCTEST_DB": "postgres", "DJASYNCTEST_NAME_SUFFIX": "_bench"},
        )
    else:
        session.log(f"The benchmark on PostgreSQL is left out. {_postgres_skip_message(problem)}")


@nox.session(python=ONE_PYTHON, tags=["ci"])
def typing(session: nox.Session) -> None:
    """mypy --strict with django-stubs, on the library and on typical users' code."""
    # pytest, pytest-django and pytest-asyncio: what the pytest plugin imports.
    session.install(
        DJANGOS["6.1"],
        "-e",
        ".[live]",
        "mypy>=1.13",
        "django-stubs>=5.2",
        "httpx>=0.27",
        "pytest>=8.2",
        "pytest-django>=4.9",
        "pytest-asyncio>=1.0",
    )
    session.run("mypy", "src", "tests/typed_usage.py")
