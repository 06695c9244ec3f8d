"""The watchdog thread: the real clock, the blocking detector's view of a loop, and timers.

One daemon thread per process serves every test. It measures real time, with
a clock that freezegun and time-machine leave alone: they replace
``time.monotonic`` (and every module attribute that refers to it) and, unless
told otherwise, the clock of asyncio's loops, so neither ``time.monotonic``
nor ``loop.call_later`` can time a test that freezes time.

How long a callback held the loop
    A loop holds no callback while it waits in its selector, and runs the
    ready callbacks between two waits: one *iteration*. ``LoopWatch`` wraps the
    loop's ``selector.select`` while the test's code runs, so the loop's own
    thread notes when each iteration starts and ends (two clock reads a turn).
    An iteration that took longer than the threshold is then checked against
    how long the loop's thread waited for a CPU in it, which the kernel counts
    for every thread (Linux: ``/proc/self/task/<tid>/schedstat``, second
    field): the block is the iteration's time less that wait, so a loaded
    machine does not make a block of a quick callback, and a block is timed
    from its start to its end. Where the kernel does not count it, the wait
    is taken as nil (the iteration's real time). A loop with no selector of
    Python's (uvloop) is timed by pings instead: every ``threshold / 4`` the
    watchdog queues a callback; the time until it runs, less the wait for a
    CPU, is how long the loop was held (at most a ping interval short).
Samples
    While an iteration has run for more than half the threshold, the watchdog
    reads, at each of its turns (every ``threshold / 4``), how long the loop's
    thread waited for a CPU in it; once the thread's own time in it reaches a
    quarter of the threshold, it copies the thread's stack at each turn: the
    last copy shows the line that was running then. The copy is all it does
    with the GIL held; what the stack means is worked out afterwards, for the
    blocks only.
One-time imports
    A copy taken while Python was loading a module is kept apart: an import
    happens once per process (httpx loads httpcore when the first client is
    made, from disk on a cold machine), so the block is the code's own only
    if, leaving out the stretch that may have been importing (from the last
    copy before the first import seen to the first copy after the last one),
    the thread still held the loop for the threshold. Otherwise the import's
    copy explains the block. An import that ended before the first copy
    (a quarter of the threshold) goes unseen.
Timers
    ``call_at(when, callback)`` runs ``callback`` on the watchdog thread at
    ``when`` on the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple

from djasynctest._affinity import unpinned

__unittest = True

#: The real monotonic clock: a reference to the function that freezegun's
#: scan of module attributes does not recognise, made before any test runs.
now: functools.partial[float] = functools.partial(time.monotonic)

# How old the loop thread's reading of its CPU wait may be when an iteration
# starts: a block is measured short by less than this.
_FRESH = 0.002


class CpuWait:
    """How long one thread has waited for a CPU so far (seconds), as the kernel counts it.

    Any thread may read it. Where the kernel does not count it, it reads 0.0.
    ``reading`` is the owning thread's last reading, made at ``read_at``.
    """

    __slots__ = ("_fd", "read_at", "reading")

    def __init__(self, native_id: int) -> None:
        self._fd: int | None = None
        with contextlib.suppress(OSError):
            self._fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        self.read_at = float("-inf")
        self.reading = 0.0

    def __call__(self) -> float:
        fd = self._fd
        if fd is None:
            return 0.0
        try:
            return int(os.pread(fd, 64, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def refresh(self, at: float) -> None:
        self.reading = self()
        self.read_at = at


# threading.get_ident() -> that thread's CpuWait (one open file per thread that runs a loop).
_cpu_waits: dict[int, CpuWait] = {}


def cpu_wait() -> CpuWait:
    """The current thread's ``CpuWait``."""
    wait = _cpu_waits.get(threading.get_ident())
    if wait is None:
        wait = _cpu_waits[threading.get_ident()] = CpuWait(threading.get_native_id())
    return wait


class Frame(NamedTuple):
    """What a sample keeps of one frame of the loop's thread."""

    filename: str
    lineno: int
    name: str
    qualname: str
    flags: int
    module: str


def snapshot(frame: FrameType | None) -> tuple[Frame, ...]:
    """The stack of ``frame``, outermost first: taken on the watchdog thread, which holds
    the GIL (and so keeps the loop's thread from running) only while it copies it."""
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append(
            Frame(
                code.co_filename,
                frame.f_lineno,
                code.co_name,
                code.co_qualname,
                code.co_flags,
                frame.f_globals.get("__name__", ""),
            )
        )
        frame = frame.f_back
    frames.reverse()
    return tuple(frames)


class LoopWatch:
    """Blocking detection for one test's loop: shared by its thread and the watchdog.

    ``describe`` turns the stack of the loop's thread, sampled while it was
    blocked, into what the report shows (on the loop's thread, after the run,
    for the blocks only; with None where no sample could be taken).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        describe: Callable[[tuple[Frame, ...] | None], Any],
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.describe = describe
        self.thread_id = threading.get_ident()
        self.waited = cpu_wait()
        selector = getattr(loop, "_selector", None)
        self._selector = selector if callable(getattr(selector, "select", None)) else None
        self.pinged = self._selector is None
        # When the iteration (or, pinged, the ping) now running began, and how long
        # the loop's thread had waited for a CPU by then; None: the loop is idle.
        self.busy_since: float | None = None
        self.waited_then = 0.0
        self.samples = _Samples(float("nan"))  # the iteration's copies of the stack
        self.blocks: list[tuple[float, tuple[Frame, ...] | None]] = []

    def start(self) -> None:
        # The loop's thread, before it runs the loop: the first iteration starts
        # when the selector first returns.
        self.busy_since = None
        selector = self._selector
        if selector is not None:
            selector.select = self._hook(selector.select)
        watchdog().watch(self)

    def stop(self) -> list[tuple[float, Any]]:
        # The loop's thread, when the loop has stopped: the last iteration ended
        # with it (the loop stops without waiting in the selector again).
        watchdog().watches.discard(self)
        if self._selector is not None:
            vars(self._selector).pop("select", None)
        self.ended(now())
        blocks, self.blocks = self.blocks, []
        return [(held, self.describe(stack)) for held, stack in blocks]

    def _hook(self, select: Callable[[float | None], Any]) -> Callable[[float | None], Any]:
        threshold = self.threshold
        waited = self.waited
        clock = now.func  # the real time.monotonic, called without the partial

        def watched_select(timeout: float | None = None) -> Any:
            # The loop's thread, at each turn of the loop: an iteration ends, and
            # the next starts once the selector returns.
            since = self.busy_since
            if since is not None:
                end = clock()
                if end - since < threshold:
                    self.busy_since = None
                else:
                    self.ended(end)
            events = select(timeout)
            started = clock()
            if started - waited.read_at > _FRESH:
                waited.refresh(started)
            self.waited_then = waited.reading
            self.busy_since = started
            return events

        return watched_select

    def pong(self, sent: float) -> None:
        # The loop's thread, pinged: the loop ran the ping queued at ``sent``.
        if sent == self.busy_since:
            self.ended(now())

    def ended(self, end: float) -> None:
        # The loop's thread: the loop was busy from busy_since until ``end``.
        since = self.busy_since
        if since is None:
            return
        self.busy_since = None
        held = end - since
        if held < self.threshold:
            return
        held -= self.waited() - self.waited_then
        if held >= self.threshold:
            samples = self.samples
            self.blocks.append(
                (held, samples.explain(held, self.threshold) if samples.since == since else None)
            )

    def look(self, current: float) -> None:
        # The watchdog's thread, at each of its turns.
        since = self.busy_since
        if since is None:
            if self.pinged:
                self.waited_then = self.waited()
                self.busy_since = current
                with contextlib.suppress(RuntimeError):  # the loop just closed
                    self.loop.call_soon_threadsafe(self.pong, current)
            return
        if current - since <= self.threshold / 2:
            return
        own = current - since - (self.waited() - self.waited_then)
        if own < self.threshold / 4:
            return
        stack = snapshot(sys._current_frames().get(self.thread_id))
        if self.busy_since == since:  # still the same iteration
            if self.samples.since != since:
                self.samples = _Samples(since)
            self.samples.add(own, stack)


class _Samples:
    """The copies of the stack taken in one iteration (the watchdog's thread adds them)."""

    __slots__ = ("after_import", "before_import", "imported", "plain", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.plain: tuple[Frame, ...] | None = None  # the last copy outside an import
        self.imported: tuple[Frame, ...] | None = None  # the last copy inside one
        # The thread's own time at the last copy before the first import seen, and
        # at the first copy after the last one (None: the iteration ended in it).
        self.before_import = 0.0
        self.after_import: float | None = None

    def add(self, own: float, stack: tuple[Frame, ...]) -> None:
        if any(frame.filename.startswith("<frozen importlib") for frame in stack):
            self.imported = stack
            self.after_import = None
            return
        self.plain = stack
        if self.imported is None:
            self.before_import = own
        elif self.after_import is None:
            self.after_import = own

    def explain(self, held: float, threshold: float) -> tuple[Frame, ...] | None:
        """The copy that explains a block of ``held`` seconds of the thread's own time."""
        if self.imported is None:
            return self.plain
        after = held if self.after_import is None else self.after_import
        if self.plain is None or self.before_import + held - after < threshold:
            return self.imported
        return self.plain


class Timer:
    """A callback that the watchdog runs at ``when`` (real clock), unless cancelled."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback

    def cancel(self) -> None:
        watchdog().timers.discard(self)


class _Watchdog:
    """One thread per process; it sleeps while nothing is watched or timed."""

    def __init__(self) -> None:
        self.watches: set[LoopWatch] = set()
        self.timers: set[Timer] = set()
        self.wake = threading.Event()
        # When the thread next looks at its work by itself (inf: only when woken).
        self.sleeping_until = 0.0
        self._thread = threading.Thread(target=self._run, name="djasynctest-watchdog", daemon=True)
        self._thread.start()

    def watch(self, watch: LoopWatch) -> None:
        self.watches.add(watch)
        if self.sleeping_until - now() > watch.threshold / 4:
            self.wake.set()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(when, callback)
        self.timers.add(timer)
        if when < self.sleeping_until:
            self.wake.set()
        return timer

    def _run(self) -> None:
        unpinned()
        idle_since = now()
        while True:
            current = now()
            for timer in [timer for timer in list(self.timers) if timer.when <= current]:
                self.timers.discard(timer)
                with contextlib.suppress(Exception):
                    timer.callback()
            watches = list(self.watches)
            delay: float | None
            if watches:
                idle_since = current
                for watch in watches:
                    watch.look(current)
                delay = min(watch.threshold for watch in watches) / 4
            elif current - idle_since > 1:
                delay = None  # until woken
            else:
                delay = 0.02
            if self.timers:
                until = max(0.0, min(timer.when for timer in list(self.timers)) - current)
                delay = until if delay is None else min(delay, until)
            self.sleeping_until = float("inf") if delay is None else current + delay
            # What watch() and call_at() added meanwhile saw the old sleeping_until.
            if set(self.watches) != set(watches) or any(
                timer.when < self.sleeping_until for timer in list(self.timers)
            ):
                continue
            if self.wake.wait(delay):
                self.wake.clear()
                if delay is None:
                    idle_since = now()


_watchdog: _Watchdog | None = None


def watchdog() -> _Watchdog:
    """The process's watchdog thread, started on first use (again after a fork)."""
    global _watchdog
    if _watchdog is None:
        _watchdog = _Watchdog()
    return _watchdog


def _forget_the_parents() -> None:
    # A forked child has none of its parent's threads: it starts a watchdog of its
    # own, and reads its own threads' CPU waits (the files read the parent's).
    global _watchdog
    _watchdog = None
    for wait in _cpu_waits.values():
        wait.close()
    _cpu_waits.clear()


os.register_at_fork(after_in_child=_forget_the_parents)
