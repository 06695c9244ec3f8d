"""Benchmark: what an async test costs next to a sync ``TestCase`` test.

``nox -s bench`` runs this. In one process, for each kind of test (trivial,
ORM, setUpTestData, AsyncClient request) it builds N tests of each flavour
(Django's sync ``TestCase``, ``async def`` tests in Django's ``TestCase``,
plain ``IsolatedAsyncioTestCase``, ``AsyncTestCase`` with a loop per test and
per class) and runs them in interleaved rounds, keeping each flavour's best
round, so that machine noise hits every flavour alike. It also times one DB
thread hop, the diagnostics' overhead, the speed-up of two parallel workers on
a 2,000-test suite, and resources after 5,000 tests. Results print as a table
and are written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import django.test  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.test.utils import setup_databases, setup_test_environment  # noqa: E402

import djasynctest  # noqa: E402
from djasynctest import AsyncLiveServerTestCase, AsyncTestCase  # noqa: E402
from djasynctest._affinity import pin_together  # noqa: E402
from djasynctest._blocking import sample  # noqa: E402
from djasynctest._dbthread import db_thread  # noqa: E402
from djasynctest._diagnostics import Deadline  # noqa: E402
from djasynctest._routing import enter_routing, exit_routing  # noqa: E402
from djasynctest._watchdog import LoopWatch  # noqa: E402
from tests.dbconfig import BACKEND  # noqa: E402
from tests.testapp.models import Item  # noqa: E402

Body = Callable[..., Any]
# ORM calls in each test of the kind "orm20".
CALLS = 20


def bodies(kind: str, is_async: bool) -> dict[str, Any]:
    """The class attributes of one kind of test, sync or async."""
    if kind == "trivial":
        if is_async:

            async def test(self: Any) -> None:
                pass
        else:

            def test(self: Any) -> None:
                pass

        return {"test": test}
    if kind == "orm":
        if is_async:

            async def set_up(self: Any) -> None:
                await Item.objects.acreate(name="setup")

            async def test(self: Any) -> None:
                await Item.objects.acreate(name="test")
                assert await Item.objects.acount() == 2
        else:

            def set_up(self: Any) -> None:
                Item.objects.create(name="setup")

            def test(self: Any) -> None:
                Item.objects.create(name="test")
                assert Item.objects.count() == 2

        return {"setUp": set_up, "test": test}
    if kind == "testdata":

        @classmethod  # type: ignore[misc]
        def set_up_test_data(cls: Any) -> None:
            Item.objects.bulk_create(Item(name=f"row-{i}") for i in range(20))

        if is_async:

            async def test(self: Any) -> None:
                assert (await Item.objects.aget(name="row-7")).name == "row-7"
        else:

            def test(self: Any) -> None:
                assert Item.objects.get(name="row-7").name == "row-7"

        return {"setUpTestData": set_up_test_data, "test": test}
    if kind == "orm20":
        if is_async:

            async def test(self: Any) -> None:
                for _ in range(CALLS):
                    await Item.objects.acount()
        else:

            def test(self: Any) -> None:
                for _ in range(CALLS):
                    Item.objects.count()

        return {"test": test}
    if kind == "client":
        if is_async:

            async def test(self: Any) -> None:
                assert (await self.async_client.get("/items/")).status_code == 200
        else:

            def test(self: Any) -> None:
                assert self.client.get("/items/").status_code == 200

        return {"test": test}
    raise ValueError(kind)


FLAVOURS: dict[str, tuple[type, bool, dict[str, Any]]] = {
    "TestCase (sync)": (django.test.TestCase, False, {}),
    "TestCase (async def)": (django.test.TestCase, True, {}),
    "IsolatedAsyncioTestCase": (unittest.IsolatedAsyncioTestCase, True, {}),
    "AsyncTestCase, loop per test": (AsyncTestCase, True, {}),
    "AsyncTestCase, loop per class": (AsyncTestCase, True, {"loop_scope": "class"}),
    "AsyncTestCase, one loop for the run": (AsyncTestCase, True, {"loop_scope": "session"}),
    # What a suite swapped to our classes mostly runs: plain def tests and hooks.
    "AsyncTestCase, sync test": (AsyncTestCase, False, {}),
    "AsyncTestCase, loop per class, cpu_affinity off": (
        AsyncTestCase,
        True,
        {"loop_scope": "class", "cpu_affinity": False},
    ),
}
KINDS = ["trivial", "orm", "orm20", "testdata", "client"]
# What a user's suite is: classes of every kind and flavour, one after another in a
# random order, each run as Django's runner runs it.
MIXED_FLAVOURS = [
    "TestCase (sync)",
    "TestCase (async def)",
    "AsyncTestCase, loop per test",
    "AsyncTestCase, loop per class",
    "AsyncTestCase, sync test",
]
MIXED_KINDS = ["trivial", "orm", "orm20"]

# (kind, flavour): the most it may cost, as a ratio to the sync TestCase test.
TARGETS = {
    ("trivial", "AsyncTestCase, loop per test"): 2.0,
    ("trivial", "AsyncTestCase, loop per class"): 1.5,
    ("orm", "AsyncTestCase, loop per test"): 1.5,
    ("orm", "AsyncTestCase, loop per class"): 1.5,
    ("client", "AsyncTestCase, loop per test"): 1.4,
    ("client", "AsyncTestCase, loop per class"): 1.2,
    ("trivial", "AsyncTestCase, sync test"): 1.1,
    ("orm", "AsyncTestCase, sync test"): 1.1,
}
# kind: how much faster than Django's own async def test, at least (loop per test).
AHEAD_OF_DJANGO = {"trivial": 1.5, "orm": 1.25}
# In the mixed suite: (kind, flavour): the most it may cost, as a ratio to the sync test.
MIXED_TARGETS = {
    ("trivial", "AsyncTestCase, loop per class"): 2.0,
    ("trivial", "AsyncTestCase, sync test"): 1.1,
    ("orm", "AsyncTestCase, sync test"): 1.1,
}
# In the mixed suite, trivial test: faster than Django's async def test, at least (loop
# per class).
MIXED_AHEAD_OF_DJANGO = 2.0
# One awaited ORM call, over the same call in a sync test: at most, in microseconds; and
# at least how many times less than Django's own async def test's extra cost.
CALL_EXTRA_US = 40.0
CALL_AHEAD_OF_DJANGO = 3.0
# A loop for the whole run costs no more per test than one per class (noise allowed).
SESSION_AT_MOST_CLASS = 1.05


def make_class(base: type, attrs: dict[str, Any], count: int) -> type:
    attrs = dict(attrs)
    test = attrs.pop("test")
    if "setUp" in attrs and base is unittest.IsolatedAsyncioTestCase:
        attrs["asyncSetUp"] = attrs.pop("setUp")
    methods = {f"test_{i:05}": test for i in range(count)}
    return type("Bench", (base,), {"__module__": __name__, **attrs, **methods})


def make_suite(base: type, attrs: dict[str, Any], count: int, per_class: int) -> unittest.TestSuite:
    """``count`` tests in classes of ``per_class``, as a real suite has them."""
    suite = unittest.TestSuite()
    for _ in range(max(1, count // per_class)):
        case = make_class(base, attrs, per_class)
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return suite


def run_suite(case: type | unittest.TestSuite) -> float:
    if isinstance(case, unittest.TestSuite):
        suite = case
    else:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    start = time.perf_counter()
    suite.run(result)
    elapsed = time.perf_counter() - start
    if not result.wasSuccessful():
        raise RuntimeError(f"{case} failed: {(result.errors + result.failures)[0][1]}")
    return elapsed / result.testsRun


def per_test_costs(count: int, rounds: int, per_class: int) -> dict[str, dict[str, float]]:
    classes = {}
    for kind in KINDS:
        for flavour, (base, _, _) in FLAVOURS.items():
            if base is unittest.IsolatedAsyncioTestCase and kind != "trivial":
                continue  # without Django's isolation, only the trivial test compares
            classes[kind, flavour] = flavour_attrs(kind, flavour)
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for key, (base, attrs) in classes.items():
            suite = make_suite(base, attrs, count, per_class)
            gc.collect()
            cost = run_suite(suite)
            best[key] = min(cost, best.get(key, cost))
    table: dict[str, dict[str, float]] = {}
    for (kind, flavour), cost in best.items():
        table.setdefault(kind, {})[flavour] = cost
    return table


def flavour_attrs(kind: str, flavour: str) -> tuple[type, dict[str, Any]]:
    base, is_async, extra = FLAVOURS[flavour]
    attrs = bodies(kind, is_async)
    if base is django.test.TestCase and "setUp" in attrs:
        # Django's TestCase calls setUp synchronously, even for async tests.
        attrs["setUp"] = bodies(kind, False)["setUp"]
    return base, {**attrs, **extra}


def mixed_suite_costs(count: int, rounds: int, per_class: int) -> dict[str, dict[str, float]]:
    """Per-test cost of each flavour in a suite that mixes them all, as a user's does.

    Classes of every kind and flavour run one at a time in a random order
    (``loadTestsFromTestCase(cls).run(result)``, as Django's runner runs a
    class), each timed on its own; a flavour's cost is the sum of its classes'
    times over its tests, the best of ``rounds`` shuffles.
    """
    rng = random.Random(20)
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        classes = [
            ((kind, flavour), make_class(*flavour_attrs(kind, flavour), per_class))
            for kind in MIXED_KINDS
            for flavour in MIXED_FLAVOURS
            for _ in range(max(1, count // per_class))
        ]
        rng.shuffle(classes)
        spent: dict[tuple[str, str], float] = {}
        tests: dict[tuple[str, str], int] = {}
        gc.collect()
        for key, case in classes:
            suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
            result = unittest.TestResult()
            start = time.perf_counter()
            suite.run(result)
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
            if not result.wasSuccessful():
                raise RuntimeError(f"{key} failed: {(result.errors + result.failures)[0][1]}")
            tests[key] = tests.get(key, 0) + result.testsRun
        for key, total in spent.items():
            cost = total / tests[key]
            best[key] = min(cost, best.get(key, cost))
    table: dict[str, dict[str, float]] = {}
    for (kind, flavour), cost in best.items():
        table.setdefault(kind, {})[flavour] = cost
    return {kind: {f: table[kind][f] for f in MIXED_FLAVOURS} for kind in MIXED_KINDS}


def call_extra_costs(per_test: dict[str, dict[str, float]]) -> dict[str, float]:
    """What one awaited ORM call costs over the same call in a sync test, per flavour.

    From the ``orm20`` and ``trivial`` kinds of the same run: (orm20 - trivial)
    is what the test's ``CALLS`` calls cost in that flavour; the sync test's
    figure is subtracted, and the rest divided by ``CALLS``.
    """
    sync = per_test["orm20"]["TestCase (sync)"] - per_test["trivial"]["TestCase (sync)"]
    return {
        flavour: ((cost - per_test["trivial"][flavour]) - sync) / CALLS
        for flavour, cost in per_test["orm20"].items()
        if flavour != "TestCase (sync)" and FLAVOURS[flavour][1]
    }


PUBLISHED = ("django-filter", "26.2")


def published_suite_costs(rounds: int) -> dict[str, float] | None:
    """Wall time of a published suite (django-filter's, under Django's runner) as
    published and with our classes swapped in (docs/howto/try-a-suite.rst),
    interleaved, the best of ``rounds``; None where its requirements are missing."""
    sys.path.insert(0, str(ROOT / "tests" / "conformance"))
    from thirdparty import SUITES, sdist

    [suite] = [suite for suite in SUITES if (suite.name, suite.version) == PUBLISHED]
    try:
        for requirement in suite.requirements:
            importlib.metadata.version(requirement.split("=")[0])
    except importlib.metadata.PackageNotFoundError:
        print(f"{suite.name}'s requirements are not installed: its suite is not timed")
        return None
    cache = Path(tempfile.gettempdir()) / "djasynctest-thirdparty"
    source = sdist(suite.name, suite.version, cache)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "conformance" / "swap"), str(source)]),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    commands = {
        "published": [sys.executable, "runtests.py", "--noinput"],
        "swapped": [
            sys.executable,
            str(ROOT / "tests" / "conformance" / "swap" / "swapped_runtests.py"),
            "--noinput",
        ],
    }
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=source, env=env, check=True, capture_output=True)
            elapsed = time.perf_counter() - start
            best[name] = min(elapsed, best.get(name, elapsed))
    return best


def live_server_costs(count: int, rounds: int) -> dict[str, float]:
    """One GET of an async view through a real server, per test, in each live-server flavour.

    Django's LiveServerTestCase serves from a thread of its own and flushes the
    database after each test; AsyncLiveServerTestCase serves on the test's loop,
    inside its transaction. The sync TestCase's test-client GET is the reference.
    """
    import httpx

    def sync_get(self: Any) -> None:
        with urllib.request.urlopen(self.live_server_url + "/items/") as response:
            assert response.status == 200

    async def async_get(self: Any) -> None:
        async with httpx.AsyncClient(base_url=self.live_server_url, verify=False) as http:
            assert (await http.get("/items/")).status_code == 200

    @classmethod  # type: ignore[misc]
    async def class_client(cls: Any) -> None:
        cls.http = httpx.AsyncClient(base_url=cls.live_server_url, verify=False)

    @classmethod  # type: ignore[misc]
    async def close_client(cls: Any) -> None:
        await cls.http.aclose()

    async def class_get(self: Any) -> None:
        assert (await self.http.get("/items/")).status_code == 200

    flavours = {
        "TestCase, test client (sync)": (django.test.TestCase, bodies("client", False)),
        "LiveServerTestCase (sync, urllib)": (django.test.LiveServerTestCase, {"test": sync_get}),
        "AsyncLiveServerTestCase, loop per test": (AsyncLiveServerTestCase, {"test": async_get}),
        "AsyncLiveServerTestCase, loop per class": (
            AsyncLiveServerTestCase,
            {
                "loop_scope": "class",
                "asyncSetUpClass": class_client,
                "asyncTearDownClass": close_client,
                "test": class_get,
            },
        ),
    }
    if BACKEND == "sqlite-file":  # channels runs Daphne in another process: a file it can share
        try:
            from channels.testing import ChannelsLiveServerTestCase
        except ImportError:
            print("channels (with daphne) is not installed: its live server is not measured")
        else:
            flavours["ChannelsLiveServerTestCase (sync, urllib)"] = (
                ChannelsLiveServerTestCase,
                {"test": sync_get, "host": "127.0.0.1"},
            )
    classes = {name: make_class(base, attrs, count) for name, (base, attrs) in flavours.items()}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, case in classes.items():
            gc.collect()
            cost = run_suite(case)
            best[name] = min(cost, best.get(name, cost))
    return best


def hop_costs(count: int) -> dict[str, float]:
    db = db_thread()

    def timed(call: Callable[[], Any]) -> float:
        for _ in range(200):
            call()
        start = time.perf_counter()
        for _ in range(count):
            call()
        return (time.perf_counter() - start) / count

    async def loop_hops() -> dict[str, float]:
        async def many(routed: bool) -> float:
            routing = enter_routing(db) if routed else None
            try:
                for _ in range(200):
                    await sync_to_async(int)()
                start = time.perf_counter()
                for _ in range(count):
                    await sync_to_async(int)()
                return (time.perf_counter() - start) / count
            finally:
                if routing is not None:
                    exit_routing(routing)

        return {
            "stock sync_to_async, from a loop": await many(routed=False),
            "sync_to_async to the DB thread, from a loop": await many(routed=True),
        }

    hops = {"DB thread call, from sync code": timed(lambda: db.call(int))}
    hops.update(asyncio.run(loop_hops()))
    # As within a test class, where both threads share one CPU (cpu_affinity).
    restore = pin_together(db.thread.native_id)
    if restore is not None:
        try:
            hops["DB thread call, from sync code, one CPU"] = timed(lambda: db.call(int))
            pinned = asyncio.run(loop_hops())
            for name in (
                "stock sync_to_async, from a loop",
                "sync_to_async to the DB thread, from a loop",
            ):
                hops[f"{name}, one CPU"] = pinned[name]
        finally:
            restore()
    return hops


def diagnostics_overhead(count: int, rounds: int) -> dict[str, float]:
    """What the diagnostics add to a trivial async test.

    End to end, the difference drowns in the machine's noise; so the
    diagnostics' own per-test work (what a test shorter than a watchdog ping
    pays) is timed directly too, on a live loop.
    """
    attrs = bodies("trivial", True)
    variants = {
        "diagnostics off": {"blocking_threshold": None},
        "blocking detector (default)": {},
        "blocking detector + timeout": {"timeout": 60},
    }
    classes = {
        name: make_class(AsyncTestCase, {**attrs, **extra}, count)
        for name, extra in variants.items()
    }
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, case in classes.items():
            cost = run_suite(case)
            best[name] = min(cost, best.get(name, cost))

    loop = asyncio.new_event_loop()
    try:
        repeat = 20000
        start = time.perf_counter()
        for _ in range(repeat):
            watch = LoopWatch(loop, 0.1, functools.partial(sample, allowed=()))
            watch.start()
            watch.stop()
        best["detector's own work per test"] = (time.perf_counter() - start) / repeat
        start = time.perf_counter()
        for _ in range(repeat):
            deadline = Deadline(loop, 60, "test")
            deadline.running(None)
            deadline.cancel()
        best["timeout's own work per test"] = (time.perf_counter() - start) / repeat
    finally:
        loop.close()
    return best


def resources_after(total: int) -> dict[str, dict[str, float]]:
    def snapshot() -> dict[str, float]:
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1
        with open("/proc/self/statm") as statm:
            rss_pages = int(statm.read().split()[1])
        return {
            "threads": threading.active_count(),
            "open_fds": fds,
            "rss_mib": rss_pages * resource.getpagesize() / 2**20,
        }

    attrs = bodies("orm", True)
    run_suite(make_class(AsyncTestCase, attrs, 100))
    gc.collect()
    first = snapshot()
    for _ in range((total - 100) // 500):
        run_suite(make_class(AsyncTestCase, attrs, 500))
    gc.collect()
    return {"after 100 tests": first, f"after {total} tests": snapshot()}


PARALLEL_HEADER = """
from django.test import TestCase
from djasynctest import AsyncTestCase
from tests.testapp.models import Item


def _async_test(number):
    async def test(self):
        await Item.objects.acreate(name=f"item-{number}")
        assert await Item.objects.acount() == 1
    return test


def _sync_test(number):
    def test(self):
        Item.objects.create(name=f"item-{number}")
        assert Item.objects.count() == 1
    return test

"""
# name: (module, tests, runner, workers). Each worker starts Python, Django and its test
# database (under a second for manage.py test, about 2 s for pytest-xdist): the suites are
# long enough for that to be a small part of them. pytest runs the same suite of sync
# TestCase tests too: what pytest-xdist itself gains on this machine.
PARALLEL_RUNS = {
    "manage.py test, AsyncTestCase": ("test_async_6k", 6000, "manage.py", ["1", "2"]),
    "pytest -n, AsyncTestCase": ("test_async_10k", 10000, "pytest", ["0", "2"]),
    "pytest -n, TestCase (sync)": ("test_sync_10k", 10000, "pytest", ["0", "2"]),
}


def parallel_suite(tests: int, *, is_async: bool) -> str:
    """A module of ``tests`` ORM tests, in classes of 100."""
    base, make = ("AsyncTestCase", "_async_test") if is_async else ("TestCase", "_sync_test")
    return PARALLEL_HEADER + "\n".join(
        f"class Cases{c}({base}):\n"
        f"    locals().update({{f'test_{{n:03}}': {make}(n) for n in range(100)}})\n"
        for c in range(tests // 100)
    )


def parallel_speedup() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        package = Path(folder) / "bench_suite"
        package.mkdir()
        (package / "__init__.py").write_text("")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([folder, str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "tests.runnerproject.settings",
        }
        manage = str(ROOT / "tests" / "runnerproject" / "manage.py")
        results = {}
        for name, (module, tests, runner, workers) in PARALLEL_RUNS.items():
            code = parallel_suite(tests, is_async="AsyncTestCase" in name)
            (package / f"{module}.py").write_text(code)
            if runner == "manage.py":
                command = [sys.executable, manage, "test", f"bench_suite.{module}", "--parallel"]
            else:
                pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                command = [*pytest, f"{package}/{module}.py", "-n"]
            times = []
            for count in workers:
                start = time.perf_counter()
                subprocess.run(
                    [*command, count], cwd=ROOT, env=env, check=True, capture_output=True
                )
                times.append(time.perf_counter() - start)
            results[name] = {
                "tests": tests,
                "1 worker (s)": times[0],
                "2 workers (s)": times[1],
                "speed-up": times[0] / times[1],
            }
        return results


PYTEST_STYLE = {
    "pytest-django, sync test (db)": (
        "def test_orm(db, n):\n"
        "    Item.objects.create(name='test')\n"
        "    assert Item.objects.count() == 1\n",
        ["-p", "no:asyncio"],
    ),
    "djasynctest.pytest, async test (db)": (
        "async def test_orm(db, n):\n"
        "    await Item.objects.acreate(name='test')\n"
        "    assert await Item.objects.acount() == 1\n",
        ["-p", "no:asyncio", "-p", "djasynctest.pytest"],
    ),
    "pytest-asyncio, async test (transactional_db)": (
        "async def test_orm(transactional_db, n):\n"
        "    await Item.objects.acreate(name='test')\n"
        "    assert await Item.objects.acount() == 1\n",
        ["--asyncio-mode=auto"],
    ),
}


def pytest_style_costs(rounds: int) -> dict[str, float]:
    """Per-test cost of pytest-style ORM tests (functions with pytest-django's fixtures).

    Each runs in a pytest process of its own, with 100 and 500 tests: the
    difference, over 400, leaves out the process's start-up. pytest-asyncio's
    row is the usual workaround without the plugin (``transactional_db``, whose
    rows a per-test flush removes).
    """
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, str(ROOT)])}
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        for _ in range(rounds):
            for name, (body, options) in PYTEST_STYLE.items():
                times = {}
                for count in (100, 500):
                    module = Path(folder) / f"test_style_{count}.py"
                    module.write_text(
                        "import pytest\n\nfrom tests.testapp.models import Item\n\n\n"
                        f"@pytest.mark.parametrize('n', range({count}))\n{body}"
                    )
                    start = time.perf_counter()
                    subprocess.run(
                        [*base, *options, str(module)],
                        cwd=ROOT,
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                    times[count] = time.perf_counter() - start
                cost = (times[500] - times[100]) / 400
                best[name] = min(cost, best.get(name, cost))
    return best


def print_ratios(costs: dict[str, float], reference: str, *, width: int) -> None:
    base = costs[reference]
    for flavour, cost in costs.items():
        print(f"  {flavour:{width}} {cost * 1e3:7.3f} ms  {cost / base:5.2f}x")


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def target_lines(results: dict[str, Any]) -> list[str]:
    """Each target, with the figure measured, met or missed."""
    per_test = results["per_test"]
    lines = []
    for (kind, flavour), most in TARGETS.items():
        ratio = per_test[kind][flavour] / per_test[kind]["TestCase (sync)"]
        verdict = "met" if ratio <= most else "MISSED"
        lines.append(f"{kind:8} {flavour:36} {ratio:5.2f}x sync (<= {most:.2f}x)  {verdict}")
    for kind, least in AHEAD_OF_DJANGO.items():
        costs = per_test[kind]
        ahead = costs["TestCase (async def)"] / costs["AsyncTestCase, loop per test"]
        verdict = "met" if ahead >= least else "MISSED"
        lines.append(
            f"{kind:8} {'ahead of Django async def (loop per test)':36} "
            f"{ahead:5.2f}x faster (>= {least:.2f}x)  {verdict}"
        )
    for kind, costs in per_test.items():
        ratio = (
            costs["AsyncTestCase, one loop for the run"] / costs["AsyncTestCase, loop per class"]
        )
        verdict = "met" if ratio <= SESSION_AT_MOST_CLASS else "MISSED"
        lines.append(
            f"{kind:8} {'one loop for the run vs per class':36} "
            f"{ratio:5.2f}x (<= {SESSION_AT_MOST_CLASS:.2f}x)  {verdict}"
        )
    extra = results["call_extra"]
    ours, theirs = extra["AsyncTestCase, loop per class"], extra["TestCase (async def)"]
    lines.append(
        f"{'orm20':8} {'one awaited call over sync (class loop)':36} "
        f"{ours * 1e6:5.1f} us (<= {CALL_EXTRA_US:.0f} us)  {_verdict(ours * 1e6 <= CALL_EXTRA_US)}"
    )
    lines.append(
        f"{'orm20':8} {'its extra vs Django async def extra':36} {theirs / ours:5.2f}x less "
        f"(>= {CALL_AHEAD_OF_DJANGO:.1f}x)  {_verdict(theirs / ours >= CALL_AHEAD_OF_DJANGO)}"
    )
    mixed = results["mixed"]
    for (kind, flavour), most in MIXED_TARGETS.items():
        ratio = mixed[kind][flavour] / mixed[kind]["TestCase (sync)"]
        lines.append(
            f"{kind:8} {'mixed: ' + flavour:36} {ratio:5.2f}x sync (<= {most:.2f}x)  "
            f"{_verdict(ratio <= most)}"
        )
    trivial = mixed["trivial"]
    ahead = trivial["TestCase (async def)"] / trivial["AsyncTestCase, loop per class"]
    met = _verdict(ahead >= MIXED_AHEAD_OF_DJANGO)
    lines.append(
        f"{'trivial':8} {'mixed: ahead of Django async def':36} {ahead:5.2f}x faster "
        f"(>= {MIXED_AHEAD_OF_DJANGO:.1f}x, loop per class)  {met}"
    )
    published = results.get("published")
    if published:
        ratio = published["swapped"] / published["published"]
        lines.append(
            f"{'suite':8} {PUBLISHED[0] + ' swapped vs published':36} {ratio:5.2f}x (<= 1.10x)  "
            f"{_verdict(ratio <= 1.1)}"
        )
    return lines


def print_table(results: dict[str, Any]) -> None:
    versions = results["versions"]
    print(
        f"djasynctest {versions['djasynctest']}, Django {versions['django']}, "
        f"Python {versions['python']}, {versions['database']}, "
        f"{results['tests']} tests of each kind in classes of {results['tests_per_class']}"
    )
    for kind, costs in results["per_test"].items():
        print(f"\n{kind}:" if kind != "orm20" else f"\norm20 ({CALLS} awaited count() calls):")
        print_ratios(costs, "TestCase (sync)", width=48)
    print("\nOne awaited ORM call, over the same call in a sync test:")
    for flavour, cost in results["call_extra"].items():
        print(f"  {flavour:48} {cost * 1e6:7.1f} us")
    print("\nMixed suite: classes of every flavour, one at a time, in a random order:")
    for kind, costs in results["mixed"].items():
        print(f"  {kind}:")
        print_ratios(costs, "TestCase (sync)", width=46)
    if results.get("published"):
        published = results["published"]
        print(f"\nA published suite, {' '.join(PUBLISHED)} (wall time, Django's runner):")
        for name, cost in published.items():
            ratio = cost / published["published"]
            print(f"  {name:12} {cost:7.2f} s  {ratio:5.2f}x")
    print("\nTargets:")
    for line in target_lines(results):
        print(f"  {line}")
    if "live_server" in results:
        count = results["live_server_tests_per_class"]
        print(f"\nLive server, one GET per test ({count} tests per class):")
        print_ratios(results["live_server"], "TestCase, test client (sync)", width=40)
    if "pytest_style" in results:
        print("\npytest-style ORM test (a function with pytest-django's db):")
        print_ratios(results["pytest_style"], "pytest-django, sync test (db)", width=46)
    print("\nOne thread hop:")
    stock = results["hops"]["stock sync_to_async, from a loop"]
    for name, cost in results["hops"].items():
        print(f"  {name:54} {cost * 1e6:7.1f} us  {cost / stock:5.2f}x stock")
    print("\nDiagnostics (trivial async test):")
    off = results["diagnostics"]["diagnostics off"]
    for name, cost in results["diagnostics"].items():
        share = cost / off if "own work" in name else cost / off - 1
        print(f"  {name:32} {cost * 1e3:7.3f} ms  {100 * share:+5.1f} %")
    if "parallel" in results:
        print("\nParallel, async ORM tests (wall time):")
        for name, row in results["parallel"].items():
            print(
                f"  {name:30} {row['tests']:6,} tests: 1 worker {row['1 worker (s)']:6.2f} s, "
                f"2 workers {row['2 workers (s)']:6.2f} s, speed-up {row['speed-up']:.2f}x"
            )
    if "resources" in results:
        print("\nResources:")
        for when, snap in results["resources"].items():
            print(
                f"  {when:20} threads {snap['threads']:3.0f}, open fds {snap['open_fds']:4.0f}, "
                f"RSS {snap['rss_mib']:6.1f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--tests", type=int, default=400, help="tests of each kind and flavour (default 400)"
    )
    parser.add_argument("--per-class", type=int, default=10, help="tests per class (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--quick", action="store_true", help="skip parallel and resource runs")
    options = parser.parse_args()
    setup_test_environment()
    setup_databases(verbosity=0, interactive=False, aliases={"default"})
    results: dict[str, Any] = {
        "tests": options.tests,
        "tests_per_class": options.per_class,
        "versions": {
            "djasynctest": djasynctest.__version__,
            "django": django.__version__,
            "python": platform.python_version(),
            "database": BACKEND,
        },
        "per_test": per_test_costs(options.tests, options.rounds, options.per_class),
        "mixed": mixed_suite_costs(options.tests, options.rounds, options.per_class),
        "live_server_tests_per_class": min(options.tests, 100),
        "live_server": live_server_costs(min(options.tests, 100), options.rounds),
        "hops": hop_costs(2000),
        "diagnostics": diagnostics_overhead(options.tests, options.rounds),
    }
    results["call_extra"] = call_extra_costs(results["per_test"])
    if not options.quick:
        results["published"] = published_suite_costs(options.rounds)
        results["pytest_style"] = pytest_style_costs(options.rounds)
        results["parallel"] = parallel_speedup()
        results["resources"] = resources_after(5000)
    print_table(results)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {options.json}")


if __name__ == "__main__":
    main()
