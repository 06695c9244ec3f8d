"""Order does not matter: the library's suite and the example's, shuffled and reversed.

Runs each suite under a shuffle seed (or those given) and reversed, and checks
that every run passes with the counts of the others (the usual order is what the
test sessions run). The library's tests that only start subprocesses
(tests/test_runners.py, tests/test_bootstrap.py, tests/test_pytest_plugin.py) are
left out: each of their runs is a fresh process, whatever the order.

    python tests/order.py [SEED ...]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [int(seed) for seed in sys.argv[1:]] or [7]
ORDERS = [["--shuffle", str(seed)] for seed in SEEDS] + [["--reverse"]]


def run(command: list[str], cwd: Path, pattern: str) -> str:
    """Run one suite; its counts (the summary line without the time)."""
    process = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    output = process.stdout + process.stderr
    counts = re.search(pattern, output, re.MULTILINE)
    if process.returncode != 0 or counts is None:
        print(output)
        sys.exit(f"FAILED: {' '.join(command)} (exit code {process.returncode})")
    return counts[1]


def main() -> None:
    suites = {
        "library": (
            [
                sys.executable,
                "-W",
                "error",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--ignore=tests/test_runners.py",
                "--ignore=tests/test_bootstrap.py",
                "--ignore=tests/test_pytest_plugin.py",
            ],
            ROOT,
            r"^(\d+ passed.*) in [\d.]+s",
        ),
        "example": (
            [sys.executable, "-W", "error", "manage.py", "test", "--noinput"],
            ROOT / "examples" / "shop",
            r"^(Ran \d+ tests?)",
        ),
    }
    for name, (command, cwd, pattern) in suites.items():
        seen: dict[str, str] = {}
        for order in ORDERS:
            counts = run(command + order, cwd, pattern)
            label = " ".join(order) or "usual order"
            seen[label] = counts
            print(f"{name:8} {label:16} {counts}", flush=True)
        if len(set(seen.values())) != 1:
            sys.exit(f"FAILED: the {name} suite's counts depend on the order: {seen}")


if __name__ == "__main__":
    main()
