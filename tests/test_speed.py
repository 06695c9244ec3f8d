"""What makes tests fast must keep them right: CPU affinity, one hand-over per sync test."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import unittest
from typing import Any

import pytest
from django.test import override_settings

from djasynctest import AsyncTestCase
from djasynctest._affinity import pin_together
from djasynctest._dbthread import db_thread
from tests import children
from tests.testapp.models import Item
from tests.utils import assert_passed, run_case, thread

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_affinity = pytest.mark.skipif(len(CPUS) < 2, reason="needs sched_setaffinity and 2+ CPUs")


def _masks() -> dict[str, set[int]]:
    return {
        "test": os.sched_getaffinity(0),
        "db": os.sched_getaffinity(db_thread().thread.native_id or 0),
    }


@needs_affinity
def test_a_class_runs_its_threads_on_one_cpu_and_gives_their_masks_back() -> None:
    before = _masks()
    seen: list[dict[str, set[int]]] = []

    class Pinned(AsyncTestCase):
        async def test_async(self) -> None:
            await Item.objects.acount()
            seen.append(_masks())

        def test_sync(self) -> None:
            seen.append({"on db": os.sched_getaffinity(0)})

    assert_passed(run_case(Pinned), 2)
    [cpu] = seen[0]["test"]
    assert seen == [{"test": {cpu}, "db": {cpu}}, {"on db": {cpu}}]
    assert _masks() == before


@needs_affinity
def test_a_db_thread_pinned_before_it_starts_working_stays_pinned() -> None:
    """The DB thread a class starts may run its first line after the class pinned it."""
    from djasynctest._affinity import unpinned

    pinned = threading.Event()
    masks: list[set[int]] = []

    def db_thread_starts() -> None:
        pinned.wait(10)
        unpinned()  # the first thing a thread of the library's own does
        masks.append(os.sched_getaffinity(0))

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, CPUS)  # every CPU, whatever an earlier test left
    thread = threading.Thread(target=db_thread_starts)
    thread.start()
    try:
        restore = pin_together(thread.native_id)
        assert restore is not None
        try:
            pinned.set()
            thread.join(10)
            assert masks == [os.sched_getaffinity(0)]
            assert len(masks[0]) == 1
        finally:
            restore()
    finally:
        pinned.set()
        thread.join(10)
        os.sched_setaffinity(0, mine)


@needs_affinity
@pytest.mark.parametrize(
    ("cpu_affinity", "settings"), [(False, {}), (None, {"CPU_AFFINITY": False})]
)
def test_cpu_affinity_off_changes_nothing(
    cpu_affinity: bool | None, settings: dict[str, Any]
) -> None:
    before = _masks()
    seen: list[dict[str, set[int]]] = []

    async def test(self: Any) -> None:
        seen.append(_masks())

    attrs: dict[str, Any] = {"test": test}
    if cpu_affinity is not None:
        attrs["cpu_affinity"] = cpu_affinity
    with override_settings(DJASYNCTEST=settings):
        assert_passed(run_case(type("Unpinned", (AsyncTestCase,), attrs)), 1)
    assert seen == [before]


@needs_affinity
@pytest.mark.parametrize(("env", "django_worker", "slot"), [("gw3", 0, 3), ("", 2, 1)])
def test_parallel_workers_take_different_cpus(
    env: str, django_worker: int, slot: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import django.test.runner

    monkeypatch.setenv("PYTEST_XDIST_WORKER", env)
    monkeypatch.setattr(django.test.runner, "_worker_id", django_worker, raising=False)
    pinned: list[set[int]] = []

    def run() -> None:
        # A thread of its own, whose mask nothing else uses.
        db = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
        db.start()
        restore = pin_together(db.native_id)
        assert restore is not None
        pinned.append(os.sched_getaffinity(0))
        restore()
        pinned.append(os.sched_getaffinity(0))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert pinned == [{CPUS[slot % len(CPUS)]}, set(CPUS)]


def _process_cpus(method: str) -> int:
    """The CPUs of a multiprocessing child started with ``method``, from this thread."""
    count: int = children.from_a_child(method, children.report)
    return count


def _program_cpus() -> int:
    out = subprocess.run([sys.executable, "-c", children.REPORT], capture_output=True, check=True)
    return int(out.stdout)


def _thread_cpus() -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(len(os.sched_getaffinity(0))))
    thread.start()
    thread.join()
    return seen[0]


@needs_affinity
def test_threads_and_processes_a_test_starts_get_the_processs_cpus() -> None:
    """A server forked in setUpClass, a browser a test starts, a thread it starts: none
    is confined to the CPU the test's threads are pinned to.

    Also the canary of the wrapped ``multiprocessing.util.spawnv_passfds`` (see
    ``_affinity``): if a Python version starts spawn or forkserver children otherwise,
    "spawned" or "forkserver" fails here; find the new call and wrap that.
    """
    seen: dict[str, int] = {}

    class Starts(AsyncTestCase):
        blocking_threshold = None  # the children take a while to start

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            seen["setUpClass (DB thread)"] = len(os.sched_getaffinity(0))
            seen["forked from setUpClass"] = _process_cpus("fork")

        async def test_1_async(self) -> None:
            seen["test thread"] = len(os.sched_getaffinity(0))
            seen["thread"] = _thread_cpus()
            seen["test thread after a thread"] = len(os.sched_getaffinity(0))
            seen["program"] = _program_cpus()

        def test_2_sync(self) -> None:
            seen["spawned"] = _process_cpus("spawn")
            seen["forkserver"] = _process_cpus("forkserver")

    assert_passed(run_case(Starts), 2)
    everything = len(CPUS)
    assert seen == {
        "setUpClass (DB thread)": 1,
        "forked from setUpClass": everything,
        "test thread": 1,
        "thread": everything,
        "test thread after a thread": 1,  # still pinned: only the new thread is not
        "program": everything,
        "spawned": everything,
        "forkserver": everything,
    }


@pytest.mark.parametrize("loop_scope", ["test", "class"])
def test_a_sync_test_runs_on_the_test_thread_with_no_hand_over(loop_scope: str) -> None:
    """Its per-test set-up, hooks, body, cleanups and rollback run on the test's thread,
    as in Django, with no job for the DB thread. Async code that turns up still runs on
    the loop, its ORM calls on the DB thread."""
    jobs: list[int] = []
    seen: list[tuple[str, int]] = []

    class AllSync(AsyncTestCase):
        def setUp(self) -> None:
            jobs.append(db_thread().jobs_started)
            Item.objects.create(name="set up")
            self.addCleanup(lambda: Item.objects.create(name="cleanup"))

        def test_1(self) -> None:
            Item.objects.create(name="test")

        def test_2(self) -> None:
            async def async_cleanup() -> None:
                seen.append((thread(), await Item.objects.acount()))

            self.addAsyncCleanup(async_cleanup)

        def test_3(self) -> None:
            self.assertEqual(Item.objects.count(), 1)

        def tearDown(self) -> None:
            seen.append((thread(), Item.objects.count()))

    AllSync.loop_scope = loop_scope  # type: ignore[assignment]
    assert_passed(run_case(AllSync), 3)
    # test_2's async cleanup makes one ORM call: one job more.
    assert [later - earlier for earlier, later in itertools.pairwise(jobs)] == [0, 1]
    assert seen == [("main", 2), ("main", 1), ("main", 1), ("main", 1)]


@pytest.mark.parametrize(("timeout", "where"), [(None, "main"), (60.0, "db")])
def test_a_class_is_torn_down_and_cleaned_up_in_one_hand_over_at_most(
    timeout: float | None, where: str
) -> None:
    """tearDownClass, the end of the class atomics and the class cleanups run in that
    order, as unittest calls them, on the test's thread (with a timeout: on the DB thread,
    in one job); a failing tearDownClass still gets its cleanups."""
    seen: list[tuple[str, str, int]] = []

    class Cleaned(AsyncTestCase):
        fail = False

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            cls.addClassCleanup(
                lambda: seen.append(("cleanup", thread(), db_thread().jobs_started))
            )

        def test_it(self) -> None:
            Item.objects.create(name="test")

        @classmethod
        def tearDownClass(cls) -> None:
            seen.append(("tearDownClass", thread(), db_thread().jobs_started))
            super().tearDownClass()
            if cls.fail:
                raise ValueError("tearDownClass failed")

    Cleaned.timeout = timeout  # type: ignore[misc]
    assert_passed(run_case(Cleaned), 1)
    assert [(name, thread) for name, thread, _ in seen] == [
        ("tearDownClass", where),
        ("cleanup", where),
    ]
    assert seen[0][2] == seen[1][2]

    seen.clear()
    Cleaned.fail = True
    result = run_case(Cleaned)
    assert [name for name, _, _ in seen] == ["tearDownClass", "cleanup"]
    assert len(result.errors) == 1
    assert "ValueError: tearDownClass failed" in result.errors[0][1]
    assert Item.objects.count() == 0


def test_class_cleanups_run_after_a_debug_run_that_skipped_them() -> None:
    """unittest's debug() stops at a failing tearDownClass before its doClassCleanups: a
    later run of the class whose setUpClass fails still runs its class cleanups."""
    ran: list[str] = []

    class Debugged(AsyncTestCase):
        fail_set_up = False

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            cls.addClassCleanup(ran.append, "cleanup")
            if cls.fail_set_up:
                raise ValueError("setUpClass failed")

        def test_it(self) -> None:
            pass

        @classmethod
        def tearDownClass(cls) -> None:
            super().tearDownClass()
            if not cls.fail_set_up:
                raise ValueError("tearDownClass failed")

    before = os.sched_getaffinity(0) if CPUS else None
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Debugged)
    with pytest.raises(ValueError, match="tearDownClass failed"):
        suite.debug()
    assert ran == ["cleanup"]  # in tearDownClass's hand-over

    Debugged.fail_set_up = True
    result = run_case(Debugged)
    assert "setUpClass failed" in result.errors[0][1]
    assert ran == ["cleanup", "cleanup"]
    # The debug() run's end came with the next run: its threads have their CPUs back.
    assert (os.sched_getaffinity(0) if CPUS else None) == before
