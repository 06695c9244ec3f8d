"""Run part of Django's own test suite with djasynctest's classes swapped in.

``nox -s conformance`` runs this. It downloads the source of the installed
Django (its sdist has ``tests/`` and ``runtests.py``), runs the chosen apps
once as they are and once with ``django.test.TestCase`` and
``TransactionTestCase`` replaced by ``AsyncTestCase`` and
``AsyncTransactionTestCase`` before any test module imports them, and fails
unless every test that passes the first time passes the second time (but for
the reviewed entries of ``allowlist.txt``).
"""

from __future__ import annotations

import argparse
import re
import runpy
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = [
    "test_utils",
    "fixtures",
    "fixtures_regress",
    "transactions",
    "transaction_hooks",
    "test_client",
    "test_client_regress",
    "multiple_database",
    "async",
    "basic",
    "get_or_create",
    "select_for_update",
    "serializers",
    "sessions_tests",
    "signals",
]
# "test_x (app.tests.Class.test_x) ... ok", the docstring's first line, if
# any, on a line of its own before " ... ok".
RESULT = re.compile(
    r"^(?P<test>\w+ \([\w.]+\))(?:\n[^\n]*?)? \.\.\. "
    r"(?P<outcome>ok|FAIL|ERROR|skipped|expected failure|unexpected success)",
    re.MULTILINE,
)
RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)


def django_tests(cache: Path) -> Path:
    """The ``tests/`` folder of the installed Django's source, downloaded once."""
    import django

    version = django.__version__
    folder = cache / f"django-{version}"
    if not (folder / "tests" / "runtests.py").exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"django=={version}",
                "--dest",
                str(cache),
            ],
            check=True,
        )
        [archive] = cache.glob(f"[dD]jango-{version}.tar.gz")
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if "/tests/" in m.name]
            tar.extractall(cache, members=members, filter="data")
    return folder / "tests"


def outcomes(tests: Path, apps: list[str], *, swapped: bool) -> dict[str, str]:
    command = [sys.executable, str(Path(__file__))]
    if swapped:
        command.append("--swapped-child")
    else:
        command = [sys.executable, "runtests.py"]
    command += [*apps, "--parallel", "1", "-v", "2", "--noinput"]
    process = subprocess.run(command, cwd=tests, capture_output=True, text=True, check=False)
    output = process.stdout + process.stderr
    found = {match["test"]: match["outcome"] for match in RESULT.finditer(output)}
    ran = RAN.search(output)
    if not found or ran is None or int(ran[1]) != len(found):
        sys.exit(
            f"Could not read every result of {' '.join(command)} "
            f"({len(found)} read):\n{output[-3000:]}"
        )
    return found


def allowed() -> dict[str, str]:
    entries = {}
    for line in (HERE / "allowlist.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test, _, reason = line.partition(" # ")
            entries[test.strip()] = reason.strip()
    return entries


def swapped_child(argv: list[str]) -> None:
    """Replace Django's test cases with ours, then be ``runtests.py``."""
    import django.test

    import djasynctest

    django.test.TestCase = djasynctest.AsyncTestCase  # type: ignore[misc]
    django.test.TransactionTestCase = djasynctest.AsyncTransactionTestCase  # type: ignore[misc]
    sys.argv = ["runtests.py", *argv]
    sys.path.insert(0, str(Path.cwd()))
    runpy.run_path("runtests.py", run_name="__main__")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("apps", nargs="*", default=APPS)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "djasynctest-conformance"
    )
    options = parser.parse_args()
    tests = django_tests(options.cache)
    plain = outcomes(tests, options.apps, swapped=False)
    swapped = outcomes(tests, options.apps, swapped=True)
    passing = {test for test, outcome in plain.items() if outcome == "ok"}
    allow = allowed()
    broken = sorted(test for test in passing if swapped.get(test) != "ok" and test not in allow)
    print(f"Django's own tests ({', '.join(options.apps)}):")
    print(f"  as they are:           {len(passing)} passed of {len(plain)}")
    swapped_ok = sum(outcome == "ok" for outcome in swapped.values())
    print(f"  with djasynctest's:    {swapped_ok} passed of {len(swapped)}")
    print(f"  allowed to differ:     {len(allow)}")
    for test in broken:
        print(f"  BROKEN: {test}: {swapped.get(test, 'not run')}")
    stale = sorted(test for test in allow if swapped.get(test) == "ok")
    for test in stale:
        print(f"  passes now, remove from allowlist.txt: {test}")
    return 1 if broken or stale else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--swapped-child"]:
        swapped_child(sys.argv[2:])
    else:
        sys.exit(main())
