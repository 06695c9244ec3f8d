"""What makes tests fast must keep them right: CPU affinity."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from django.test import override_settings

from djasynctest import AsyncTestCase
from djasynctest._affinity import pin_together
from djasynctest._dbthread import db_thread
from tests.testapp.models import Item
from tests.utils import assert_passed, run_case

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
