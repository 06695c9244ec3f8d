"""What the conformance scripts share: fetching a published source, reading each test's
outcome from a runner's output, and comparing a run as published with a swapped one."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

# "test_x (app.tests.Class.test_x) ... ok", the docstring's first line, if
# any, on a line of its own before " ... ok"; a failing subtest's line has its
# description after the test's: " [message]" or " (key=value)".
RESULT = re.compile(
    r"^(?P<test>\w+ \([\w.]+\))(?: \[[^\n]*\]| \([^\n]*\))?(?:\n[^\n]*?)? \.\.\. "
    r"(?P<outcome>ok|FAIL|ERROR|skipped|expected failure|unexpected success)",
    re.MULTILINE,
)
RAN = re.compile(r"^Ran (\d+) tests? in ", re.MULTILINE)
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
    """Each test's outcome, from the output of Django's runner at verbosity 2."""
    found: dict[str, str] = {}
    for match in RESULT.finditer(output):
        # A test whose subtest failed has that outcome (it prints no "ok" of its own).
        if found.get(match["test"], "ok") == "ok":
            found[match["test"]] = match["outcome"]
    ran = RAN.search(output)
    # unittest counts no test for an error in setUpClass, setUpModule...
    class_level = sum(1 for test in found if test.startswith(CLASS_LEVEL))
    if not found or ran is None or len(found) - class_level < int(ran[1]):
        sys.exit(
            f"Could not read every result of {' '.join(command)} "
            f"({len(found)} read):\n{output[-3000:]}"
        )
    return found


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
    plain: dict[str, str], swapped: dict[str, str], allow: dict[str, str], name: str
) -> bool:
    """Print how the swapped run compares; whether every test that passes as published
    passes swapped (but for ``allow``), and no entry of ``allow`` is stale."""
    not_passing = {test for test, outcome in plain.items() if outcome != "ok"}
    passing = len(plain) - len(not_passing)
    # Every test that passes as it is must pass swapped: those that ran and did
    # not pass, unless they do not pass as they are, and those that did not run.
    failed = broken(plain, swapped, allow)
    swapped_ok = sum(outcome == "ok" for outcome in swapped.values())
    missing = passing - sum(1 for test in swapped if test not in not_passing)
    print(f"{name}:")
    print(f"  as published:          {passing} passed of {len(plain)}")
    print(f"  with djasynctest's:    {swapped_ok} passed of {len(swapped)}")
    print(f"  allowed to differ:     {len(allow)}")
    for test in failed:
        print(f"  BROKEN: {test}: {swapped[test]}")
    if missing > 0:
        print(f"  BROKEN: {missing} tests that pass as published did not run swapped")
    stale = sorted(test for test in allow if swapped.get(test) == "ok")
    for test in stale:
        print(f"  passes now, remove from the allow-list: {test}")
    return not (failed or stale or missing > 0)
