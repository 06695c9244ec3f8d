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

A thread or a process inherits the mask of the thread that starts it: what a
test starts (a server thread, a browser, a forked server process) must not be
confined to the test's CPU. So, while threads are pinned:

* a thread started from a pinned thread unpins itself before it runs (its
  ``run``, wrapped from the audit event of its start; before Python 3.12,
  which has no such event, from ``threading._start_new_thread``);
* the child of ``os.fork`` (``multiprocessing``'s fork) unpins itself
  (``os.register_at_fork``);
* a thread that starts a program (``subprocess``, ``os.posix_spawn``,
  ``os.system``, ``os.exec*``, and ``multiprocessing``'s spawn and forkserver,
  through ``multiprocessing.util.spawnv_passfds``) gets its own mask back
  first, for the rest of the class.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing.util
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

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
    started by a pinned test thread). One that ``pin_together`` pinned before it
    ran this (the DB thread a class starts) stays pinned.
    """
    if _setaffinity is not None and _PROCESS_MASK is not None:
        with _pinning, contextlib.suppress(OSError):
            pinned_by_its_class = threading.get_native_id() in _pinned
            if not pinned_by_its_class and _getaffinity(0) != _PROCESS_MASK:  # type: ignore[misc]
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
    _watch_starts()
    pinned: list[int] = []
    for tid in masks:
        try:
            with _pinning:  # a thread just started may be unpinning itself (unpinned())
                _setaffinity(tid, {cpu})
                _pinned[tid] = masks[tid]
        except OSError:
            break
        pinned.append(tid)
    else:
        return lambda: _restore(masks)
    _restore({tid: masks[tid] for tid in pinned})
    return None


def _restore(masks: dict[int, set[int]]) -> None:
    for tid, mask in masks.items():
        _pinned.pop(tid, None)
        with contextlib.suppress(OSError):  # a thread that ended has no mask to restore
            _setaffinity(tid, mask)  # type: ignore[misc]


# The threads pin_together pinned (native ids), with the masks they had before.
_pinned: dict[int, set[int]] = {}
# Orders pin_together's pinning of a thread with that thread's own unpinned().
_pinning = threading.Lock()
_THREAD_STARTS = frozenset({"_thread.start_new_thread", "_thread.start_joinable_thread"})
# Audit events of a program started from this process (os.fork: see _after_fork).
_PROGRAM_STARTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.system", "os.exec", "pty.spawn"}
)
_watching = False


def _watch_starts() -> None:
    """Once per process, before the first pin: see the threads and processes started."""
    global _watching
    if _watching:
        return
    _watching = True
    sys.addaudithook(_on_audit)
    os.register_at_fork(after_in_child=_after_fork)
    spawn = multiprocessing.util.spawnv_passfds
    multiprocessing.util.spawnv_passfds = functools.wraps(spawn)(
        functools.partial(_unpinned_first, spawn)
    )
    if sys.version_info < (3, 12):
        # No audit event for a thread's start before Python 3.12: threading starts
        # every thread through this name of its module.
        start = threading._start_new_thread  # type: ignore[attr-defined]
        threading._start_new_thread = functools.partial(_starting, start)  # type: ignore[attr-defined]


def _on_audit(event: str, args: tuple[Any, ...]) -> None:
    if not _pinned:
        return
    if event in _THREAD_STARTS:
        _thread_starting(args[0])
    elif event in _PROGRAM_STARTS:
        _unpin_this_thread()


def _starting(start: Callable[..., int], function: Any, *args: Any) -> int:
    if _pinned:
        _thread_starting(function)
    return start(function, *args)


def _thread_starting(function: Any) -> None:
    """Before a thread starts ``function`` (a ``Thread``'s ``_bootstrap``): if it is started
    from a pinned thread, it unpins itself before it runs."""
    thread = getattr(function, "__self__", None)
    if isinstance(thread, threading.Thread) and threading.get_native_id() in _pinned:
        run = thread.run
        thread.run = functools.partial(_unpinned_run, run)  # type: ignore[method-assign]


def _unpinned_run(run: Callable[[], object]) -> None:
    # The new thread, before its own code.
    unpinned()
    run()


def _unpin_this_thread() -> None:
    mask = _pinned.pop(threading.get_native_id(), None)
    if mask is not None:
        with contextlib.suppress(OSError):
            _setaffinity(0, mask)  # type: ignore[misc]


def _unpinned_first(spawn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    _unpin_this_thread()
    return spawn(*args, **kwargs)


def _after_fork() -> None:
    # The child of a fork: its one thread is the one that forked, perhaps pinned.
    if _pinned:
        _pinned.clear()
        unpinned()


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
