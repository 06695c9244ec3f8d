"""Benchmark: the blocking detector on a quiet machine and on a loaded one.

``nox -s bench`` runs this after ``run.py``. In one process it runs, at the
default threshold (0.1 s), first on a quiet machine, then with a CPU hog (twice
as many busy processes as CPUs, for the run's length):

- 500 async tests that do not block: awaited ORM calls, ``async_client``
  requests, requests to a live server, and some that spend 40 ms of CPU on the
  loop. Every report among them is a false one.
- Blocks of 1.5x the threshold, ten of each: ``time.sleep(0.15)``, 0.15 s of
  CPU in a pure Python helper, and a sync ``urllib`` call to a local server (in
  another process) that answers after 0.15 s. Each must be caught, at its line,
  and timed within 10 % of the truth: 0.15 s for the first two; for the call,
  the time it took as measured around it in the test, less the time its thread
  waited for a CPU (what the kernel counts; the server's answer comes late on
  a loaded machine, and the loop is held all that time).

It also times the detector's own cost per test (trivial async tests with the
detector on and off, interleaved, process CPU time). Results print as a table
and are written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
import unittest
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment  # noqa: E402

from djasynctest import AsyncLiveServerTestCase, AsyncTestCase, BlockingWarning  # noqa: E402
from djasynctest._watchdog import cpu_wait  # noqa: E402
from tests.testapp.models import Item  # noqa: E402

BLOCK = 0.15  # 1.5x the default threshold
CLEAN_TESTS = 500
BLOCKS_OF_EACH_KIND = 10
HELD = re.compile(r"The event loop was blocked for (\S+) s")

SLOW_SERVER = """
import http.server, sys, time
class Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(float(sys.argv[1]))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def cpu_hog(processes: int) -> Iterator[None]:
    """``processes`` busy Python processes, ended when the block ends."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


@contextmanager
def slow_server() -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVER, str(BLOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        yield f"http://127.0.0.1:{server.stdout.readline().strip()}/"
    finally:
        server.kill()
        server.wait()
        assert server.stdout is not None
        server.stdout.close()


def spin_cpu(seconds: float) -> None:
    """Pure Python work: ``seconds`` of this thread's CPU time."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def clean_classes() -> list[type]:
    """50 classes of 10 tests that do not block the loop."""

    async def orm(self: Any) -> None:
        await Item.objects.acreate(name="pen")
        self.assertEqual(await Item.objects.acount(), 1)

    async def request(self: Any) -> None:
        response = await self.async_client.get("/items/")
        self.assertEqual(response.status_code, 200)

    async def busy(self: Any) -> None:
        spin_cpu(0.04)  # 40 ms of CPU on the loop: under the threshold

    async def live(self: Any) -> None:
        await Item.objects.acreate(name="pen")
        response = await self.http.get("/items/")
        self.assertEqual(response.json(), {"items": ["pen"]})

    async def set_up_http(self: Any) -> None:
        # verify=False: no CA bundle to load, which blocks the loop (0.1 s the first time).
        self.http = httpx.AsyncClient(verify=False, base_url=self.live_server_url)
        self.addAsyncCleanup(self.http.aclose)

    plain = {"test_orm": orm, "test_request": request, "test_busy": busy}
    classes = []
    for number in range(CLEAN_TESTS // 10):
        if number % 5 == 4:
            attrs = {f"test_live_{i}": live for i in range(10)}
            attrs["asyncSetUp"] = set_up_http
            classes.append(type(f"Live{number}", (AsyncLiveServerTestCase,), attrs))
        else:
            names = ["test_orm"] * 4 + ["test_request"] * 4 + ["test_busy"] * 2
            attrs = {f"{name}_{i}": plain[name] for i, name in enumerate(names)}
            classes.append(type(f"Clean{number}", (AsyncTestCase,), attrs))
    return classes


def blocking_classes(url: str) -> dict[str, tuple[type, str, list[float] | None]]:
    """Each kind of block: its class of tests, the line the report must show, and where
    its tests put the time each block really took (None: 0.15 s)."""
    measured: list[float] = []

    async def sleeps(self: Any) -> None:
        time.sleep(BLOCK)

    async def crunches(self: Any) -> None:
        spin_cpu(BLOCK)

    async def calls_out(self: Any) -> None:
        waited, started = cpu_wait()(), time.perf_counter()
        urllib.request.urlopen(url).close()
        measured.append(time.perf_counter() - started - (cpu_wait()() - waited))

    kinds: dict[str, tuple[Callable[..., Any], str, list[float] | None]] = {
        "time.sleep(0.15)": (sleeps, "    time.sleep(BLOCK)\n", None),
        "0.15 s of CPU in a helper": (
            crunches,
            "    while time.thread_time() - start < seconds:\n",
            None,
        ),
        "sync HTTP call, 0.15 s": (
            calls_out,
            "    urllib.request.urlopen(url).close()\n",
            measured,
        ),
    }
    return {
        kind: (
            type(
                "Blocks", (AsyncTestCase,), {f"test_{i}": body for i in range(BLOCKS_OF_EACH_KIND)}
            ),
            line,
            truth,
        )
        for kind, (body, line, truth) in kinds.items()
    }


def run(case: type) -> tuple[unittest.TestResult, list[str]]:
    """Run a class; its failures and the blocking warnings it gave."""
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BlockingWarning)
        suite.run(result)
    texts = [str(w.message) for w in caught if issubclass(w.category, BlockingWarning)]
    return result, texts


def detection(url: str) -> dict[str, Any]:
    false_reports: list[str] = []
    errors: list[str] = []
    for case in clean_classes():
        result, texts = run(case)
        false_reports += texts + [t for _, t in result.failures if "LoopBlocked" in t]
        errors += [t for _, t in result.errors + result.failures if "LoopBlocked" not in t]
    kinds: dict[str, Any] = {}
    for kind, (case, line, measured) in blocking_classes(url).items():
        result, _ = run(case)
        reports = [t for _, t in result.failures]
        held = [float(m[1]) for t in reports if (m := HELD.search(t))]
        truth = [BLOCK] * len(held) if measured is None else measured
        errors += [t for _, t in result.errors]
        kinds[kind] = {
            "caught": sum("LoopBlocked" in t for t in reports),
            "at its line": sum(line in t for t in reports),
            "worst error": max(
                (abs(h - t) / t for h, t in zip(held, truth, strict=False)), default=None
            ),
            "held": held,
            "truth": truth,
        }
    return {
        "false reports": len(false_reports),
        "examples": false_reports[:3],
        "other failures": errors[:3],
        "blocks": kinds,
    }


def detector_cost(count: int, rounds: int) -> dict[str, float]:
    """CPU time per trivial async test, detector on and off, interleaved."""

    async def trivial(self: Any) -> None:
        pass

    def make(threshold: float | None) -> list[type]:
        attrs: dict[str, Any] = {f"test_{i}": trivial for i in range(10)}
        attrs["blocking_threshold"] = threshold
        return [type("Trivial", (AsyncTestCase,), attrs) for _ in range(count // 10)]

    flavours: dict[str, list[type]] = {"off": make(None), "on": make(0.1)}
    costs: dict[str, list[float]] = {name: [] for name in flavours}
    for _ in range(rounds):
        for name in random.sample(list(flavours), len(flavours)):
            start = time.process_time()
            for case in flavours[name]:
                result, _ = run(case)
                assert result.wasSuccessful()
            costs[name].append((time.process_time() - start) / count)
    median = {name: sorted(values)[len(values) // 2] for name, values in costs.items()}
    return {**median, "detector": median["on"] - median["off"]}


def verdicts(results: dict[str, Any]) -> list[str]:
    lines = []
    for load, outcome in results["detection"].items():
        lines.append(
            f"{load:10} false reports over {CLEAN_TESTS} tests: {outcome['false reports']} "
            f"(target 0): {'met' if outcome['false reports'] == 0 else 'MISSED'}"
        )
        for kind, seen in outcome["blocks"].items():
            worst = seen["worst error"]
            met = (
                seen["caught"] == seen["at its line"] == BLOCKS_OF_EACH_KIND
                and worst is not None
                and worst <= 0.10
            )
            shown = "-" if worst is None else f"{worst:.1%}"
            lines.append(
                f"{load:10} {kind:26} caught {seen['caught']}/{BLOCKS_OF_EACH_KIND}, "
                f"at its line {seen['at its line']}/{BLOCKS_OF_EACH_KIND}, worst time error "
                f"{shown} (target all, all, 10 %): {'met' if met else 'MISSED'}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "blocking.json")
    options = parser.parse_args()
    setup_test_environment()
    setup_databases(verbosity=0, interactive=False, aliases={"default"})
    hogs = 2 * (os.cpu_count() or 1)
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "hog_processes": hogs}
    results["cost"] = detector_cost(400, options.rounds)
    detected: dict[str, Any] = {}
    with slow_server() as url:
        detected["quiet"] = detection(url)
        with cpu_hog(hogs):
            detected["loaded"] = detection(url)
    results["detection"] = detected
    cost = results["cost"]
    print(
        f"per trivial async test: detector off {cost['off'] * 1e6:.0f} µs, on "
        f"{cost['on'] * 1e6:.0f} µs: {cost['detector'] * 1e6:+.1f} µs CPU"
    )
    for line in verdicts(results):
        print(line)
    for load, outcome in detected.items():
        for text in outcome["examples"] + outcome["other failures"]:
            print(f"\n{load}:\n{text}")
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {options.json}")


if __name__ == "__main__":
    main()
