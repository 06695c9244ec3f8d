"""The watchdog thread: the real clock, the loop pings of the blocking detector, and timers.

One daemon thread per process serves every test. It measures real time, with
a clock that freezegun and time-machine leave alone: they replace
``time.monotonic`` (and every module attribute that refers to it) and, unless
told otherwise, the clock of asyncio's loops, so neither ``time.monotonic``
nor ``loop.call_later`` can time a test that freezes time.

Pings
    While a loop runs a test's code, the watchdog pings it every
    ``threshold / 4`` seconds with ``call_soon_threadsafe``. A ping that has
    waited longer than ``threshold`` means one callback holds the loop: the
    watchdog samples the loop thread's stack then. When the pong comes, the
    time it waited is how long the loop was held (at least). A test shorter
    than a ping interval costs two set operations.
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
from typing import Any

from djasynctest._affinity import unpinned

__unittest = True

#: The real monotonic clock: a reference to the function that freezegun's
#: scan of module attributes does not recognise, made before any test runs.
now: Callable[[], float] = functools.partial(time.monotonic)


class LoopWatch:
    """Blocking detection for one test's loop: shared by its thread and the watchdog.

    ``describe`` turns the loop thread's frame, sampled while it is blocked,
    into what the report shows (on the watchdog thread).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        describe: Callable[[FrameType | None], Any],
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.describe = describe
        self.thread_id = threading.get_ident()
        self.ping: float | None = None  # when the unanswered ping was sent
        self.sample: Any = None  # what describe() made of the stack while blocked
        self.blocks: list[tuple[float, Any]] = []

    def start(self) -> None:
        # The loop's thread, before it runs the loop.
        self.ping = None
        self.sample = None
        watchdog().watch(self)

    def stop(self) -> list[tuple[float, Any]]:
        # The loop's thread, when the loop has stopped: a ping still waiting
        # means the loop was held until the test's code ended.
        watchdog().watches.discard(self)
        if self.ping is not None and self.sample is not None:
            self.blocks.append((now() - self.ping, self.sample))
        self.ping = None
        blocks, self.blocks = self.blocks, []
        return blocks

    def pong(self, sent: float) -> None:
        # The loop's thread: the loop is free again.
        if sent != self.ping:
            return  # a ping from an earlier run of the loop
        if self.sample is not None:
            self.blocks.append((now() - sent, self.sample))
            self.sample = None
        self.ping = None


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
        self.pid = os.getpid()
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
                self._ping(watches, current)
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

    def _ping(self, watches: list[LoopWatch], current: float) -> None:
        for watch in watches:
            if watch.ping is None:
                watch.ping = current
                with contextlib.suppress(RuntimeError):  # the loop just closed
                    watch.loop.call_soon_threadsafe(watch.pong, current)
            elif watch.sample is None and current - watch.ping > watch.threshold:
                watch.sample = watch.describe(sys._current_frames().get(watch.thread_id))


_watchdog: _Watchdog | None = None


def watchdog() -> _Watchdog:
    """The process's watchdog thread, started on first use (again after a fork)."""
    global _watchdog
    if _watchdog is None or _watchdog.pid != os.getpid():
        _watchdog = _Watchdog()
    return _watchdog
