"""CPU affinity: the test's thread and the DB thread on one CPU while a class runs.

Every awaited ORM call, and each test's rollback, hands work from the test's
thread (M) to the DB thread (D) and back. The two never run at the same time
for long: one waits while the other works. When they sit on different CPUs,
each hand-over wakes a thread on the other CPU, and on a virtual machine that
wake-up is most of the cost (~50 us against ~12 us on one CPU). So, while a
test class runs, both are pinned to one CPU of those the process may use, and
given their own masks back when the class is done.

Parallel workers each take a different CPU: Django's ``--parallel`` workers
and pytest-xdist's by their worker number; a process of its own takes the CPU
its test thread is on. Where affinity cannot be set (not Linux, a mask of one
CPU, a sandbox that refuses it), nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable

__unittest = True

Restore = Callable[[], None]

_setaffinity = getattr(os, "sched_setaffinity", None)
_getaffinity = getattr(os, "sched_getaffinity", None)
# The CPUs of the thread that imported the library (the runner's, unpinned).
_PROCESS_MASK: set[int] | None = _getaffinity(0) if _getaffinity is not None else None


def unpinned() -> None:
    """At the start of a thread of the library's own: not the class's pinned CPU.

    A thread inherits the mask of the thread that starts it, which may be a
    pinned one (a DB thread replaced in the middle of a class, the watchdog
    started by a pinned test thread).
    """
    if _setaffinity is not None and _PROCESS_MASK is not None:
        with contextlib.suppress(OSError):
            if _getaffinity(0) != _PROCESS_MASK:  # type: ignore[misc]
                _setaffinity(0, _PROCESS_MASK)


def pin_together(db_thread_id: int | None) -> Restore | None:
    """M: pin this thread and the thread ``db_thread_id`` (a native id) to one CPU.

    Returns what gives both their masks back, or ``None`` when nothing was
    changed.
    """
    if _setaffinity is None or _getaffinity is None or db_thread_id is None:
        return None
    me = threading.get_native_id()
    try:
        masks = {me: _getaffinity(0), db_thread_id: _getaffinity(db_thread_id)}
    except OSError:
        return None
    cpus = sorted(masks[me] & masks[db_thread_id])
    if len(cpus) < 2:
        return None  # one CPU (or none in common): nothing to gain
    cpu = cpus[_slot(cpus)]
    pinned: list[int] = []
    for tid in masks:
        try:
            _setaffinity(tid, {cpu})
        except OSError:
            break
        pinned.append(tid)
    else:
        return lambda: _restore(masks)
    _restore({tid: masks[tid] for tid in pinned})
    return None


def _restore(masks: dict[int, set[int]]) -> None:
    for tid, mask in masks.items():
        with contextlib.suppress(OSError):  # a thread that ended has no mask to restore
            _setaffinity(tid, mask)  # type: ignore[misc]


def _slot(cpus: list[int]) -> int:
    """The index in ``cpus`` of the CPU this process takes."""
    global _chosen
    worker = _worker_number()
    if worker is not None:
        return worker % len(cpus)
    if _chosen is None or _chosen[0] != os.getpid():
        # The CPU the scheduler ran the first class on, for every class after it.
        _chosen = (os.getpid(), _current_cpu())
    current = _chosen[1]
    return cpus.index(current) if current in cpus else 0


_chosen: tuple[int, int | None] | None = None


def _worker_number() -> int | None:
    """This process's number among parallel workers (from 0), if it is one."""
    xdist = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    if xdist:
        return int(xdist[1])
    runner = sys.modules.get("django.test.runner")
    worker_id = getattr(runner, "_worker_id", 0)
    # Django numbers its --parallel workers from 1; the main process is 0.
    return worker_id - 1 if isinstance(worker_id, int) and worker_id > 0 else None


def _current_cpu() -> int | None:
    """The CPU this thread runs on now (Linux), from field 39 of its stat."""
    try:
        with open("/proc/thread-self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # Fields after the command name start at field 3 (the state).
    return int(fields[39 - 3])
