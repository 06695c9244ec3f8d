"""What the conformance scripts share: fetching a published source, reading each test's
outcome from a runner's output, and comparing a run as published with a swapped one."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

# Django's runner, at verbosity 2, writes a line per test: "test_x
# (app.tests.Class.test_x) ... ok". Also, and read below:
# - the docstring's first line, if any, on a line of its own before " ... ok";
# - for a failing subtest, a line of its own, indented by two spaces, with the
#   subtest's description after the test's (" [message]", " (key=value)", both, or
#   " (<subtest>)") and the docstring's line again; the test then writes no outcome
#   of its own, unless something else in it fails;
# - "skipped 'reason'", "expected failure", "unexpected success";
# - "setUpClass (app.tests.Class) ... ERROR" for a class's or a module's fixture,
#   which "Ran N tests" does not count;
# - what a test writes to stderr itself: between " ... " and the outcome, which
#   then starts a line of its own, or (from a worker process, under --parallel)
#   before a test's line, on the same line.
# The errors follow the results, each after a line of "=" and "ERROR: ", "FAIL: "...;
# they are not read.
DESCRIPTION = re.compile(
    r"(?P<test>(?P<name>\w+) \([^\s()]+\.(?P=name)\)"
    # A class's or a module's dotted name: "setUpClass (#21281)" in a docstring is not one.
    r"|(?:setUp|tearDown)(?:Class|Module) \([^\s()]+\.[^\s()]+\))"
    r"(?P<rest>.*)"
)
STATUS = re.compile(r"ok|FAIL|ERROR|expected failure|unexpected success|(?P<skipped>skipped) .*")
SEPARATOR = "=" * 70
# Python 3.14 colours the outcomes when FORCE_COLOR is set, or on a terminal.
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY = re.compile(r"(?:ERROR|FAIL|UNEXPECTED SUCCESS): ")
RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
# A test whose line was found but not its outcome.
UNREAD = "unread"
CLASS_LEVEL = ("setUpClass (", "tearDownClass (", "setUpModule (", "tearDownModule (")


def sdist(name: str, version: str, cache: Path) -> Path:
    """The unpacked source distribution of ``name==version``, downloaded once."""
    folder = cache / "sources" / f"{name}-{version}"
    if not (folder / "done").exists():
        cache.mkdir(parents=True, exist_ok=True)
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        download += ["--no-binary", ":all:", f"{name}=={version}", "--dest", str(cache)]
        subprocess.run(download, check=True)
        normalized = re.sub(r"[-_.]+", "[-_.]", name)
        [archive] = [
            path
            for path in cache.glob("*.tar.gz")
            if re.fullmatch(rf"(?i){normalized}-{re.escape(version)}\.tar\.gz", path.name)
        ]
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        (folder / "done").touch()
    [root] = [path for path in folder.iterdir() if path.is_dir()]
    return root


def runner_outcomes(output: str, command: list[str]) -> dict[str, str]:
    """Each test's outcome, from the output of Django's runner at verbosity 2.

    A test whose line is there but whose outcome could not be read is ``UNREAD``."""
    found: dict[str, str] = {}

    def read(test: str, outcome: str) -> None:
        # A test whose subtest failed has that outcome (it writes no "ok" of its own).
        if found.get(test, UNREAD) == UNREAD or (found[test] == "ok" and outcome != UNREAD):
            found[test] = outcome

    waiting = None  # the test whose outcome is on a later line
    output = COLOUR.sub("", output)
    # Not splitlines(): a docstring with a "\r" in it stays on its line.
    lines = [*output.split("\n"), ""]
    number = 0
    while number < len(lines) - 1:
        line, following = lines[number], lines[number + 1]
        number += 1
        if line == SEPARATOR and SUMMARY.match(following):
            break
        description = DESCRIPTION.search(line)
        if description is None:
            if waiting is not None and (status := STATUS.fullmatch(line)):
                read(waiting, status["skipped"] or status[0])
                waiting = None
            continue
        test, rest = description["test"], description["rest"]
        if " ... " not in rest and not DESCRIPTION.search(following):
            rest += "\n" + following  # the docstring's line
            number += 1
        outcome = _outcome_after_dots(rest)
        read(test, outcome)
        waiting = test if outcome == UNREAD else None
    ran = RAN.search(output)
    # unittest counts no test for an error in setUpClass, setUpModule...
    class_level = sum(1 for test in found if test.startswith(CLASS_LEVEL))
    if not found or ran is None or len(found) - class_level < int(ran[1]):
        sys.exit(
            f"Could not find every test's line in the output of {' '.join(command)} "
            f"({len(found)} found):\n{output[-3000:]}"
        )
    return found


def _outcome_after_dots(text: str) -> str:
    """The outcome after the first " ... " that only an outcome follows (a docstring
    may have " ... " in it too)."""
    start = 0
    while (dots := text.find(" ... ", start)) != -1:
        if status := STATUS.fullmatch(text, dots + len(" ... ")):
            return status["skipped"] or status[0]
        start = dots + 1
    return UNREAD


def junit_outcomes(report: Path) -> dict[str, str]:
    """Each test's outcome, from pytest's --junitxml report."""
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((kind for kind in ("error", "failure", "skipped") if kind in kinds), "ok")
        # A test that fails and then errors at teardown is reported twice.
        if found.get(test, "ok") == "ok":
            found[test] = outcome
    if not found:
        sys.exit(f"{report} lists no test")
    return found


def allowed(path: Path) -> dict[str, str]:
    """The reviewed entries of an allow-list: "<test> # <why>" on each line."""
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test, _, reason = line.partition(" # ")
            entries[test.strip()] = reason.strip()
    return entries


def broken(plain: dict[str, str], swapped: dict[str, str], allow: dict[str, str]) -> list[str]:
    """The tests that pass as published and ran swapped without passing (but for ``allow``)."""
    not_passing = {test for test, outcome in plain.items() if outcome != "ok"}
    return sorted(
        test
        for test, outcome in swapped.items()
        if outcome != "ok" and test not in not_passing and test not in allow
    )


def compare(
    plain: dict[str, str],
    swapped: dict[str, str],
    allow: dict[str, str],
    name: str,
    *,
    self_timed: dict[str, str] | None = None,
) -> bool:
    """Print how the swapped run compares; whether every test that passes as published
    passes swapped (but for ``allow``), and no entry of ``allow`` is stale.

    A test of ``self_timed`` passes or not as the machine goes (it times its own code, or
    blocks its loop for about the blocking threshold): when it does not pass swapped, that
    is said, with why, and not counted."""
    self_timed = self_timed or {}
    not_passing = {test for test, outcome in plain.items() if outcome != "ok"}
    passing = len(plain) - len(not_passing)
    # Every test that passes as it is must pass swapped: those that ran and did
    # not pass, unless they do not pass as they are, and those that did not run.
    failed = broken(plain, swapped, {**allow, **self_timed})
    slow = broken(plain, {test: swapped[test] for test in self_timed if test in swapped}, allow)
    unread = sorted(test for test, outcome in plain.items() if outcome == UNREAD)
    swapped_ok = sum(outcome == "ok" for outcome in swapped.values())
    missing = passing - sum(1 for test in swapped if test not in not_passing)
    print(f"{name}:")
    print(f"  as published:          {passing} passed of {len(plain)}")
    print(f"  with djasynctest's:    {swapped_ok} passed of {len(swapped)}")
    print(f"  allowed to differ:     {len(allow)}")
    for test in slow:
        print(f"  not counted: {test}: {swapped[test]}, as the machine decides: {self_timed[test]}")
    for test in unread:
        print(f"  BROKEN: {test}: its outcome could not be read as published")
    for test in failed:
        print(f"  BROKEN: {test}: {swapped[test]}")
    if missing > 0:
        print(f"  BROKEN: {missing} tests that pass as published did not run swapped")
    stale = sorted(test for test in allow if swapped.get(test) == "ok")
    for test in stale:
        print(f"  passes now, remove from the allow-list: {test}")
    return not (failed or unread or stale or missing > 0)
