"""Benchmark: what an async test costs next to a sync ``TestCase`` test.

``nox -s bench`` runs this. In one process, for each kind of test (trivial,
ORM, 20 ORM calls, setUpTestData, AsyncClient request), it makes classes of
10 tests of each flavour (Django's sync ``TestCase``, ``async def`` tests in
Django's ``TestCase``, plain ``IsolatedAsyncioTestCase``, ``AsyncTestCase``
with a loop per test, per class and for the run, a sync test in
``AsyncTestCase``) and runs them one class at a time in a shuffled order,
round after round, so that the machine's noise hits every flavour alike.

A flavour's cost is the process CPU time of its tests, per test: the time of
every thread of the process, the test's and the DB thread, which other load on
the machine hardly changes. The wall time is shown beside it. Each figure is
the median over the rounds, and the ratios and targets are of CPU time. A
mixed suite (classes of several kinds and flavours), the diagnostics and the
live servers run through the same loop.

It also times one DB thread hop, and, in child processes (wall time, and
their CPU time), a published suite, pytest-style tests and the speed-up of two
parallel workers; and resources after 5,000 tests. Results print as a table
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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

# ORM calls in each test of the kind "orm20".
CALLS = 20

# Seconds per test (or per call, or per run), the median over the rounds, by clock: "cpu",
# the process CPU time (every thread's; or a child process's, with its own children), and
# "wall".
Cost = dict[str, float]
CLOCKS = ("cpu", "wall")
Key = TypeVar("Key", bound=Hashable)


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


SYNC = "TestCase (sync)"
DJANGO_ASYNC = "TestCase (async def)"
FLAVOURS: dict[str, tuple[type, bool, dict[str, Any]]] = {
    SYNC: (django.test.TestCase, False, {}),
    DJANGO_ASYNC: (django.test.TestCase, True, {}),
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
    SYNC,
    DJANGO_ASYNC,
    "AsyncTestCase, loop per test",
    "AsyncTestCase, loop per class",
    "AsyncTestCase, sync test",
]
MIXED_KINDS = ["trivial", "orm", "orm20"]

# The targets are of process CPU time per test, as ratios to a sync TestCase test of the same
# kind in the same run.
# (kind, flavour): the most it may cost.
TARGETS = {
    ("trivial", "AsyncTestCase, loop per test"): 2.0,
    ("trivial", "AsyncTestCase, loop per class"): 1.5,
    ("orm", "AsyncTestCase, loop per test"): 1.7,
    ("trivial", "AsyncTestCase, sync test"): 1.15,
}
# kind: how much less than Django's own async def test it costs, at least (loop per test).
AHEAD_OF_DJANGO = {"trivial": 2.5, "orm": 1.5}
# One awaited ORM call (loop per class), over the same call in a sync test: at most, in
# microseconds of CPU time.
CALL_EXTRA_US = 90.0
# In the mixed suite: (kind, flavour): the most it may cost, as a ratio to the sync test.
MIXED_TARGETS = {
    ("trivial", "AsyncTestCase, loop per class"): 2.0,
    ("trivial", "AsyncTestCase, sync test"): 1.15,
    ("orm", "AsyncTestCase, sync test"): 1.15,
}
# In the mixed suite, trivial test: faster than Django's async def test, at least (loop
# per class).
MIXED_AHEAD_OF_DJANGO = 2.0
# A loop for the whole run costs no more per test than one per class (noise allowed).
SESSION_AT_MOST_CLASS = 1.05
# A published suite swapped to our classes, over its published run (wall time).
PUBLISHED_AT_MOST = 1.1
# pytest, a module of tests that share rows: a module fixture is this much faster than
# making the rows for each test, at least, and costs at most this much over a TestCase
# class with setUpTestData (noise allowed).
SCOPED_AT_LEAST = 10.0
SCOPED_AT_MOST_TESTCASE = 1.1


def make_class(base: type, attrs: dict[str, Any], count: int) -> type:
    attrs = dict(attrs)
    test = attrs.pop("test")
    if "setUp" in attrs and base is unittest.IsolatedAsyncioTestCase:
        attrs["asyncSetUp"] = attrs.pop("setUp")
    methods = {f"test_{i:05}": test for i in range(count)}
    return type("Bench", (base,), {"__module__": __name__, **attrs, **methods})


def flavour_attrs(kind: str, flavour: str) -> tuple[type, dict[str, Any]]:
    base, is_async, extra = FLAVOURS[flavour]
    attrs = bodies(kind, is_async)
    if base is django.test.TestCase and "setUp" in attrs:
        # Django's TestCase calls setUp synchronously, even for async tests.
        attrs["setUp"] = bodies(kind, False)["setUp"]
    return base, {**attrs, **extra}


def stopwatch() -> Callable[[], tuple[float, float]]:
    """Start the clocks; the function returned gives the process CPU time and the wall
    time since then."""
    cpu, wall = time.process_time(), time.perf_counter()
    return lambda: (time.process_time() - cpu, time.perf_counter() - wall)


def per(spent: Sequence[float], count: float) -> Cost:
    """CPU and wall time spent over ``count`` tests, calls or runs."""
    return {clock: amount / count for clock, amount in zip(CLOCKS, spent, strict=True)}


def time_class(case: type) -> tuple[int, float, float]:
    """Run one class as Django's runner does (its suite's ``run``, with the class's
    setup and teardown): the tests it ran, the process CPU time and wall time spent."""
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    elapsed = stopwatch()
    suite.run(result)
    cpu, wall = elapsed()
    if not result.wasSuccessful():
        raise RuntimeError(f"{case} failed: {(result.errors + result.failures)[0][1]}")
    return result.testsRun, cpu, wall


def interleaved(
    flavours: dict[Key, tuple[type, dict[str, Any]]], *, classes: int, tests: int, rounds: int
) -> dict[Key, Cost]:
    """The cost per test of each flavour, run as ``classes`` classes of ``tests`` tests.

    In each round, the classes of every flavour run one at a time in a shuffled
    order; a flavour's figure for the round is the time of its classes over
    their tests, and its cost the median of its rounds' figures. Classes are
    made anew for each round, before it starts: a suite's classes are each run
    once.
    """
    rng = random.Random(20)
    figures: dict[Key, list[Cost]] = {key: [] for key in flavours}
    for _ in range(rounds):
        order = [key for key in flavours for _ in range(classes)]
        rng.shuffle(order)
        cases = [(key, make_class(*flavours[key], tests)) for key in order]
        spent = dict.fromkeys(flavours, (0, 0.0, 0.0))  # tests run, CPU, wall
        gc.collect()
        for key, case in cases:
            spent[key] = tuple(a + b for a, b in zip(spent[key], time_class(case), strict=True))
        for key, (ran, *times) in spent.items():
            figures[key].append(per(times, ran))
    return {key: median(figures[key]) for key in flavours}


def median(figures: list[Cost]) -> Cost:
    return {clock: statistics.median(figure[clock] for figure in figures) for clock in CLOCKS}


def per_test_costs(count: int, rounds: int, per_class: int) -> dict[str, dict[str, Cost]]:
    """Each kind's flavours, interleaved with one another."""
    table = {}
    for kind in KINDS:
        flavours = {
            flavour: flavour_attrs(kind, flavour)
            for flavour, (base, _, _) in FLAVOURS.items()
            # Without Django's isolation, only the trivial test compares.
            if kind == "trivial" or base is not unittest.IsolatedAsyncioTestCase
        }
        table[kind] = interleaved(
            flavours, classes=max(1, count // per_class), tests=per_class, rounds=rounds
        )
    return table


def mixed_suite_costs(count: int, rounds: int, per_class: int) -> dict[str, dict[str, Cost]]:
    """Per-test cost of each flavour in a suite that mixes kinds and flavours, as a user's
    does: the same interleaving, over the classes of every kind at once."""
    flavours = {
        (kind, flavour): flavour_attrs(kind, flavour)
        for kind in MIXED_KINDS
        for flavour in MIXED_FLAVOURS
    }
    costs = interleaved(
        flavours, classes=max(1, count // per_class), tests=per_class, rounds=rounds
    )
    return {kind: {f: costs[kind, f] for f in MIXED_FLAVOURS} for kind in MIXED_KINDS}


def call_extra_costs(per_test: dict[str, dict[str, Cost]]) -> dict[str, Cost]:
    """What one awaited ORM call costs over the same call in a sync test, per flavour.

    From the ``orm20`` and ``trivial`` kinds of the same run: (orm20 - trivial)
    is what the test's ``CALLS`` calls cost in that flavour; the sync test's
    figure is subtracted, and the rest divided by ``CALLS``.
    """

    def calls(flavour: str, clock: str) -> float:
        return per_test["orm20"][flavour][clock] - per_test["trivial"][flavour][clock]

    return {
        flavour: {clock: (calls(flavour, clock) - calls(SYNC, clock)) / CALLS for clock in CLOCKS}
        for flavour in per_test["orm20"]
        if flavour != SYNC and FLAVOURS[flavour][1]
    }


PUBLISHED = ("django-filter", "26.2")


def run_child(command: list[str], **options: Any) -> tuple[float, float]:
    """Run a child process to its end: its CPU time (with that of the processes it
    waited for: its workers) and the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **options)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu, wall


def published_suite_costs(rounds: int) -> dict[str, Cost] | None:
    """Time of a published suite's run (django-filter's, under Django's runner) as
    published and with our classes swapped in (docs/howto/try-a-suite.rst), each in a
    process of its own, interleaved, the median of ``rounds``; None where its
    requirements are missing."""
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
    runs: dict[str, list[Cost]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            runs[name].append(per(run_child(command, cwd=source, env=env), 1))
    return {name: median(costs) for name, costs in runs.items()}


def live_server_costs(count: int, rounds: int) -> dict[str, Cost]:
    """One GET of an async view through a real server, per test, in each live-server flavour.

    Django's LiveServerTestCase serves from a thread of its own and flushes the
    database after each test; AsyncLiveServerTestCase serves on the test's loop,
    inside its transaction. The sync TestCase's test-client GET is the reference.
    One class of ``count`` tests of each, interleaved: a class-scoped client keeps
    its connections across the class. Channels' server runs in a process of its
    own, whose CPU time is not the benchmark's.
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
    return interleaved(flavours, classes=1, tests=count, rounds=rounds)


def hop_costs(count: int) -> dict[str, Cost]:
    db = db_thread()

    def timed(call: Callable[[], Any]) -> Cost:
        for _ in range(200):
            call()
        elapsed = stopwatch()
        for _ in range(count):
            call()
        return per(elapsed(), count)

    async def loop_hops() -> dict[str, Cost]:
        async def many(routed: bool) -> Cost:
            routing = enter_routing(db) if routed else None
            try:
                for _ in range(200):
                    await sync_to_async(int)()
                elapsed = stopwatch()
                for _ in range(count):
                    await sync_to_async(int)()
                return per(elapsed(), count)
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


def diagnostics_overhead(count: int, rounds: int, per_class: int) -> dict[str, Cost]:
    """What the diagnostics add to a trivial async test, interleaved with one another.

    End to end, the difference is small next to the test; so the diagnostics'
    own per-test work (what a test shorter than a watchdog ping pays) is timed
    directly too, on a live loop.
    """
    attrs = bodies("trivial", True)
    variants = {
        "diagnostics off": {"blocking_threshold": None},
        "blocking detector (default)": {},
        "blocking detector + timeout": {"timeout": 60},
    }
    flavours = {name: (AsyncTestCase, {**attrs, **extra}) for name, extra in variants.items()}
    costs = interleaved(
        flavours, classes=max(1, count // per_class), tests=per_class, rounds=rounds
    )

    loop = asyncio.new_event_loop()
    try:
        repeat = 20000
        elapsed = stopwatch()
        for _ in range(repeat):
            watch = LoopWatch(loop, 0.1, functools.partial(sample, allowed=()))
            watch.start()
            watch.stop()
        costs["detector's own work per test"] = per(elapsed(), repeat)
        elapsed = stopwatch()
        for _ in range(repeat):
            deadline = Deadline(loop, 60, "test")
            deadline.running(None)
            deadline.cancel()
        costs["timeout's own work per test"] = per(elapsed(), repeat)
    finally:
        loop.close()
    return costs


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
    time_class(make_class(AsyncTestCase, attrs, 100))
    gc.collect()
    first = snapshot()
    for _ in range((total - 100) // 500):
        time_class(make_class(AsyncTestCase, attrs, 500))
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


def parallel_speedup() -> dict[str, dict[str, Any]]:
    """Each suite with one worker and with two, each run once, in a process of its own."""
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
            one, two = (
                per(run_child([*command, count], cwd=ROOT, env=env), 1) for count in workers
            )
            results[name] = {
                "tests": tests,
                "1 worker": one,
                "2 workers": two,
                "speed-up": one["wall"] / two["wall"],
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


def pytest_style_costs(rounds: int) -> dict[str, Cost]:
    """Per-test cost of pytest-style ORM tests (functions with pytest-django's fixtures).

    Each runs in a pytest process of its own, with 100 and 500 tests: the
    difference, over 400, leaves out the process's start-up. pytest-asyncio's
    row is the usual workaround without the plugin (``transactional_db``, whose
    rows a per-test flush removes). The median of ``rounds``.
    """
    runs: dict[str, list[Cost]] = {name: [] for name in PYTEST_STYLE}
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, str(ROOT)])}
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        for _ in range(rounds):
            for name, (body, options) in PYTEST_STYLE.items():
                spent = {}
                for count in (100, 500):
                    module = Path(folder) / f"test_style_{count}.py"
                    module.write_text(
                        "import pytest\n\nfrom tests.testapp.models import Item\n\n\n"
                        f"@pytest.mark.parametrize('n', range({count}))\n{body}"
                    )
                    spent[count] = run_child([*base, *options, str(module)], cwd=ROOT, env=env)
                difference = [b - a for a, b in zip(spent[100], spent[500], strict=True)]
                runs[name].append(per(difference, 400))
    return {name: median(costs) for name, costs in runs.items()}


# A module of 50 tests that share 100 rows, three ways (pytest-style, sync tests). Each
# test reads the objects and counts the rows.
SCOPED_TESTS, SCOPED_ROWS = 50, 100
SCOPED_STYLE = {
    "module fixture (db_module)": (
        "@pytest.fixture(scope='module')\n"
        "def catalogue(db_module):\n"
        "    return [Item.objects.create(name=f'item {{p}}', price=p) for p in range({rows})]\n\n\n"
        "@pytest.mark.parametrize('n', range({tests}))\n"
        "def test_catalogue(catalogue, db, n):\n"
        "    assert catalogue[0].price == 0\n"
        "    assert Item.objects.count() == {rows}\n"
    ),
    "rows made per test (db)": (
        "@pytest.fixture\n"
        "def catalogue(db):\n"
        "    return [Item.objects.create(name=f'item {{p}}', price=p) for p in range({rows})]\n\n\n"
        "@pytest.mark.parametrize('n', range({tests}))\n"
        "def test_catalogue(catalogue, db, n):\n"
        "    assert catalogue[0].price == 0\n"
        "    assert Item.objects.count() == {rows}\n"
    ),
    "TestCase class, setUpTestData": (
        "from django.test import TestCase\n\n\n"
        "class TestCatalogue(TestCase):\n"
        "    @classmethod\n"
        "    def setUpTestData(cls):\n"
        "        cls.catalogue = [\n"
        "            Item.objects.create(name=f'item {{p}}', price=p) for p in range({rows})\n"
        "        ]\n\n"
        "    def check(self):\n"
        "        assert self.catalogue[0].price == 0\n"
        "        assert Item.objects.count() == {rows}\n\n"
        "    for n in range({tests}):\n"
        "        locals()[f'test_catalogue_{{n}}'] = check\n"
    ),
}


def scoped_fixture_costs(rounds: int) -> dict[str, Cost]:
    """Per module of SCOPED_TESTS tests sharing SCOPED_ROWS rows, under pytest with the
    plugin: a module fixture, the rows made for each test, a TestCase with
    setUpTestData. A run of 1 module and one of 4 (each in a pytest process of its own):
    the difference, over 3, leaves out the process's start-up. The median of ``rounds``."""
    runs: dict[str, list[Cost]] = {name: [] for name in SCOPED_STYLE}
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, str(ROOT)])}
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
        base += ["-p", "no:asyncio", "-p", "djasynctest.pytest"]
        for _ in range(rounds):
            for style, body in SCOPED_STYLE.items():
                spent = {}
                for modules in (1, 4):
                    package = Path(folder) / f"scoped_{modules}"
                    package.mkdir(exist_ok=True)
                    for number in range(modules):
                        (package / f"test_scoped_{number}.py").write_text(
                            "import pytest\n\nfrom tests.testapp.models import Item\n\n\n"
                            + body.format(tests=SCOPED_TESTS, rows=SCOPED_ROWS)
                        )
                    spent[modules] = run_child([*base, str(package)], cwd=ROOT, env=env)
                    for module in package.iterdir():
                        module.unlink()
                difference = [b - a for a, b in zip(spent[1], spent[4], strict=True)]
                runs[style].append(per(difference, 3))
    return {style: median(costs) for style, costs in runs.items()}


# unit: (seconds to the unit, decimals)
UNITS = {"s": (1.0, 2), "ms": (1e3, 3), "us": (1e6, 1)}


def print_costs(
    title: str, costs: dict[str, Cost], reference: str | None, *, width: int, unit: str = "ms"
) -> None:
    """A row per flavour: its CPU time and wall time, each with its ratio to the
    reference row's."""
    scale, decimals = UNITS[unit]
    print(f"\n{title:{width + 2}} {'CPU':>10}{'':8}{'wall':>10}")
    for name, cost in costs.items():
        cells = []
        for clock in CLOCKS:
            ratio = f"{cost[clock] / costs[reference][clock]:5.2f}x" if reference else ""
            cells.append(f"{cost[clock] * scale:7.{decimals}f} {unit} {ratio:6}")
        print(f"  {name:{width}} " + "  ".join(cells).rstrip())


def target_line(subject: str, measured: float, bound: str, target: float, unit: str = "x") -> str:
    """``subject``: ``measured``, its target (``bound`` ``target``), met or MISSED."""
    met = measured <= target if bound == "<=" else measured >= target
    shown = {"x": "{:.2f}x", "us": "{:+.1f} us"}[unit]
    return (
        f"{subject:58} {shown.format(measured):>10}  ({bound} {shown.format(target)})  "
        f"{'met' if met else 'MISSED'}"
    )


def target_lines(results: dict[str, Any]) -> list[str]:
    """Each target, with the figure measured (process CPU time, unless it says wall),
    met or missed."""
    per_test, mixed = results["per_test"], results["mixed"]

    def ratio(costs: dict[str, Cost], flavour: str, reference: str) -> float:
        return costs[flavour]["cpu"] / costs[reference]["cpu"]

    lines = []
    for (kind, flavour), most in TARGETS.items():
        measured = ratio(per_test[kind], flavour, SYNC)
        lines.append(target_line(f"{kind}: {flavour} / sync", measured, "<=", most))
    for kind, least in AHEAD_OF_DJANGO.items():
        ahead = ratio(per_test[kind], DJANGO_ASYNC, "AsyncTestCase, loop per test")
        lines.append(target_line(f"{kind}: Django's async def / loop per test", ahead, ">=", least))
    extra = results["call_extra"]["AsyncTestCase, loop per class"]["cpu"] * 1e6
    subject = "orm20: one awaited call over sync (loop per class)"
    lines.append(target_line(subject, extra, "<=", CALL_EXTRA_US, "us"))
    for kind, costs in per_test.items():
        measured = ratio(
            costs, "AsyncTestCase, one loop for the run", "AsyncTestCase, loop per class"
        )
        subject = f"{kind}: one loop for the run / loop per class"
        lines.append(target_line(subject, measured, "<=", SESSION_AT_MOST_CLASS))
    for (kind, flavour), most in MIXED_TARGETS.items():
        measured = ratio(mixed[kind], flavour, SYNC)
        lines.append(target_line(f"mixed, {kind}: {flavour} / sync", measured, "<=", most))
    ahead = ratio(mixed["trivial"], DJANGO_ASYNC, "AsyncTestCase, loop per class")
    subject = "mixed, trivial: Django's async def / loop per class"
    lines.append(target_line(subject, ahead, ">=", MIXED_AHEAD_OF_DJANGO))
    scoped = results.get("scoped")
    if scoped:
        module = scoped["module fixture (db_module)"]["cpu"]
        faster = scoped["rows made per test (db)"]["cpu"] / module
        subject = "pytest: module fixture, faster than rows made per test"
        lines.append(target_line(subject, faster, ">=", SCOPED_AT_LEAST))
        measured = module / scoped["TestCase class, setUpTestData"]["cpu"]
        subject = "pytest: module fixture / TestCase with setUpTestData"
        lines.append(target_line(subject, measured, "<=", SCOPED_AT_MOST_TESTCASE))
    published = results.get("published")
    if published:
        measured = published["swapped"]["wall"] / published["published"]["wall"]
        subject = f"suite: {PUBLISHED[0]} swapped / published (wall)"
        lines.append(target_line(subject, measured, "<=", PUBLISHED_AT_MOST))
    return lines


def print_table(results: dict[str, Any]) -> None:
    versions = results["versions"]
    print(
        f"djasynctest {versions['djasynctest']}, Django {versions['django']}, "
        f"Python {versions['python']}, {versions['database']}, "
        f"{results['tests']} tests of each kind in classes of {results['tests_per_class']}, "
        f"median of {results['rounds']} interleaved rounds; per test, process CPU time "
        "(both threads) and wall time"
    )
    for kind, costs in results["per_test"].items():
        title = f"{kind} ({CALLS} awaited count() calls):" if kind == "orm20" else f"{kind}:"
        print_costs(title, costs, SYNC, width=48)
    print_costs(
        "One awaited ORM call, over a sync test's:",
        results["call_extra"],
        None,
        width=48,
        unit="us",
    )
    for kind, costs in results["mixed"].items():
        print_costs(f"Mixed suite (all its kinds interleaved), {kind}:", costs, SYNC, width=48)
    if results.get("published"):
        print_costs(
            f"A published suite, {' '.join(PUBLISHED)} (a run):",
            results["published"],
            "published",
            width=48,
            unit="s",
        )
    print("\nTargets (process CPU time per test, unless marked wall):")
    for line in target_lines(results):
        print(f"  {line}")
    if "live_server" in results:
        print_costs(
            f"Live server, a GET per test ({results['live_server_tests_per_class']} per class):",
            results["live_server"],
            "TestCase, test client (sync)",
            width=48,
        )
    if "scoped" in results:
        print_costs(
            f"pytest, a module of {SCOPED_TESTS} tests sharing {SCOPED_ROWS} rows (per module):",
            results["scoped"],
            "TestCase class, setUpTestData",
            width=48,
        )
    if "pytest_style" in results:
        print_costs(
            "pytest-style ORM test (pytest-django's db):",
            results["pytest_style"],
            "pytest-django, sync test (db)",
            width=48,
        )
    print_costs(
        "One thread hop (ratios to stock):",
        results["hops"],
        "stock sync_to_async, from a loop",
        width=54,
        unit="us",
    )
    diagnostics = results["diagnostics"]
    own_work = {name: cost for name, cost in diagnostics.items() if "own work" in name}
    end_to_end = {name: cost for name, cost in diagnostics.items() if name not in own_work}
    print_costs("Diagnostics (trivial async test):", end_to_end, "diagnostics off", width=48)
    print_costs("Diagnostics' own work per test:", own_work, None, width=48, unit="us")
    if "parallel" in results:
        print("\nParallel, async ORM tests (a run; CPU of the run and its workers):")
        for name, row in results["parallel"].items():
            one, two = row["1 worker"], row["2 workers"]
            print(
                f"  {name:30} {row['tests']:6,} tests: 1 worker {one['wall']:6.2f} s "
                f"(CPU {one['cpu']:6.2f} s), 2 workers {two['wall']:6.2f} s "
                f"(CPU {two['cpu']:6.2f} s), speed-up {row['speed-up']:.2f}x"
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
        "--tests",
        type=int,
        default=400,
        help="tests of each kind and flavour in each round (default 400)",
    )
    parser.add_argument("--per-class", type=int, default=10, help="tests per class (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds, of which the median (default 3)"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip the runs in child processes and the resources run",
    )
    options = parser.parse_args()
    setup_test_environment()
    setup_databases(verbosity=0, interactive=False, aliases={"default"})
    tests, rounds, per_class = options.tests, options.rounds, options.per_class
    results: dict[str, Any] = {
        "tests": tests,
        "tests_per_class": per_class,
        "rounds": rounds,
        "versions": {
            "djasynctest": djasynctest.__version__,
            "django": django.__version__,
            "python": platform.python_version(),
            "database": BACKEND,
        },
        "per_test": per_test_costs(tests, rounds, per_class),
        "mixed": mixed_suite_costs(tests, rounds, per_class),
        "live_server_tests_per_class": min(tests, 100),
        "live_server": live_server_costs(min(tests, 100), rounds),
        "hops": hop_costs(2000),
        "diagnostics": diagnostics_overhead(tests, rounds, per_class),
    }
    results["call_extra"] = call_extra_costs(results["per_test"])
    if not options.quick:
        results["published"] = published_suite_costs(rounds)
        results["pytest_style"] = pytest_style_costs(rounds)
        results["scoped"] = scoped_fixture_costs(rounds)
        results["parallel"] = parallel_speedup()
        results["resources"] = resources_after(5000)
    print_table(results)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {options.json}")


if __name__ == "__main__":
    main()
