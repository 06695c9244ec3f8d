"""Run published suites of popular packages as published, and on djasynctest's classes.

``nox -s thirdparty`` runs this. For each suite of ``SUITES`` it downloads the
package's source distribution at the pinned version, runs its tests as its
authors do (Django's runner, or pytest with pytest-django), then again with
``django.test.TestCase`` and ``TransactionTestCase`` replaced by
``AsyncTestCase`` and ``AsyncTransactionTestCase`` before any test module
imports them (the recipe of docs/howto/try-a-suite.rst), and fails when a test
that passes as published does not pass swapped (but for the reviewed entries of
``thirdparty-allowlist.txt``), or when the swap reached no test at all.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from outcomes import allowed, compare, junit_outcomes, runner_outcomes, sdist

HERE = Path(__file__).resolve().parent
# Put on the path of the runs: the swap, as a module (pytest's -p) and a script.
SWAP = HERE / "swap"


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    runner: str  # "django": its runtests.py (Django's runner); "pytest"
    requirements: tuple[str, ...]


SUITES = (
    Suite(
        "django-filter",
        "26.2",
        "django",
        ("djangorestframework==3.18.3", "pytz"),
    ),
    Suite(
        "djangorestframework",
        "3.18.3",
        "pytest",
        (
            "pytest-django>=4.9",
            "dj-database-url>=3.1",
            "django-filter",
            "inflection",
            "markdown",
            "pygments",
            "pyyaml",
            "requests",
            "uritemplate",
            "legacy-cgi; python_version >= '3.13'",
        ),
    ),
)


def run(suite: Suite, source: Path, *, swapped: bool, work: Path) -> tuple[dict[str, str], int]:
    """Each test's outcome, and how many tests ran on djasynctest's classes."""
    count = work / f"{suite.name}-{'swapped' if swapped else 'published'}.count"
    count.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SWAP), str(source)]),
        "DJASYNCTEST_SWAP_COUNT": str(count),
    }
    if suite.runner == "django":
        script = [str(SWAP / "swapped_runtests.py")] if swapped else ["runtests.py"]
        command = [sys.executable, *script, "-v", "2", "--noinput"]
        process = subprocess.run(command, cwd=source, env=env, capture_output=True, check=False)
        found = runner_outcomes((process.stdout + process.stderr).decode(errors="replace"), command)
    else:
        report = work / f"{suite.name}.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-p", "no:randomly", "-p", "no:asyncio", f"--junitxml={report}"]
        if swapped:
            command += ["-p", "djasynctest_swap"]
        subprocess.run(command, cwd=source, env=env, capture_output=True, check=False)
        found = junit_outcomes(report)
    return found, int(count.read_text()) if count.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suites", nargs="*", help="names of SUITES (default: all)")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "djasynctest-thirdparty"
    )
    parser.add_argument("--requirements", action="store_true", help="print them and stop")
    options = parser.parse_args()
    chosen = [suite for suite in SUITES if not options.suites or suite.name in options.suites]
    if options.requirements:
        for suite in chosen:
            print("\n".join(suite.requirements))
        return 0
    allow = allowed(HERE / "thirdparty-allowlist.txt")
    ok = True
    with tempfile.TemporaryDirectory() as work:
        for suite in chosen:
            source = sdist(suite.name, suite.version, options.cache)
            plain, _ = run(suite, source, swapped=False, work=Path(work))
            swapped, reached = run(suite, source, swapped=True, work=Path(work))
            ok = compare(plain, swapped, allow, f"{suite.name} {suite.version}") and ok
            print(f"  ran on djasynctest's:  {reached}")
            if not reached:
                print("  BROKEN: the swap reached no test")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
