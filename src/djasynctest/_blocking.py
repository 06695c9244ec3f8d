"""Whose code blocked the event loop, and what the report says.

The watchdog (``_watchdog``) samples the loop thread's stack while a callback
holds the loop; ``sample`` reads that stack at once, on the watchdog thread.

The rule: a block is the project's when the project's own code made it. Walk
the stack to the innermost frame of the project's code (not the standard
library's, not an installed package's). If nothing runs below it (a C call
such as ``time.sleep``), or it called a plain function (``requests.get``,
``render``), the project made a blocking call: the test fails. If it
*awaited* a coroutine of an installed package (``acreate_user``, which hashes
the password on the loop) and the block is inside that, the package blocked
where it offered an async API: the test only warns, naming the package. A
block with no project frame at all (in a package's own task) is the
package's too. A block while Python imports a module happens once per
process: when the project's code imports it (a lazy import in a function),
it warns; when a library does (httpx loading httpcore on first use), it is
not reported, as its length depends only on the machine. ``blocking_allowed``
names modules or functions whose blocks are not reported at all.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import importlib
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from djasynctest._diagnostics import Deadline, LoopBlocked, stack_text
from djasynctest._diagnostics import package_of as _package
from djasynctest._watchdog import Frame, LoopWatch

__unittest = True

T = TypeVar("T")

_ASYNC = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_HASHERS = "django.contrib.auth.hashers"
# What runs on the loop starts after asyncio.Runner.run.
_RUNNERS = asyncio.runners.__file__
_IMPORTLIB = importlib.__file__  # importlib.import_module: who called it imports


@dataclass(frozen=True)
class Block:
    """What the watchdog saw while the loop was held."""

    stack: str
    package: str | None  # None: the project's own code blocked
    allowed: bool
    hashing: bool  # inside Django's password hashers
    importing: str | None = None  # the module Python was loading (a one-time cost)


# An iteration that held the loop past the threshold while the watchdog thread could
# not run: the block is known, its line is not; whose it is neither, so it only warns.
UNSAMPLED = Block(stack="", package="", allowed=False, hashing=False)


def _matches(frame: Frame, allowed: tuple[str, ...]) -> bool:
    # "a.b" allows the module a.b, the modules of the package a.b, and what they define.
    function = f"{frame.module}.{frame.qualname}."
    return any(function.startswith(f"{name}.") for name in allowed)


def sample(stack: tuple[Frame, ...] | None, allowed: tuple[str, ...]) -> Block:
    """M, after the run: what the stack the watchdog copied while the loop was held says."""
    if stack is None:
        return UNSAMPLED
    frames = list(stack)  # outermost first
    runners = [i for i, f in enumerate(frames) if f.filename == _RUNNERS]
    if runners:
        frames = frames[runners[-1] + 1 :]
    packages = [_package(f.filename) for f in frames]
    project = [i for i, package in enumerate(packages) if package is None]
    owner: str | None
    if not project:
        owner = next((p for p in packages if p not in (None, "djasynctest")), "djasynctest")
    else:
        callee = project[-1] + 1
        if callee == len(frames) or not frames[callee].flags & _ASYNC:
            owner = None  # the project's code blocked, or made a blocking call
        else:
            owner = next(
                (p for p in packages[callee:] if p != "the standard library"), packages[callee]
            )
    importing = None
    lazy_import_of_a_library = False
    first_import = next(
        (i for i, f in enumerate(frames) if f.filename.startswith("<frozen importlib")), None
    )
    if first_import is not None:
        # Python was loading a module: once per process.
        modules = [f.module for f in frames if f.name == "<module>"]
        importing = modules[-1] if modules else "a module"
        owner = owner or "the import system"
        importer = next(
            (f for f in reversed(frames[:first_import]) if f.filename != _IMPORTLIB), None
        )
        # A library's own lazy import (httpx loading httpcore, anyio its backend): how
        # long it takes depends on the machine, and only pre-importing would avoid it.
        lazy_import_of_a_library = importer is not None and _package(importer.filename) not in (
            None,
            "djasynctest",
        )
    return Block(
        stack=stack_text([(f.filename, f.lineno, f.name, None) for f in frames]),
        package=owner,
        allowed=lazy_import_of_a_library
        or (bool(allowed) and any(_matches(f, allowed) for f in frames)),
        hashing=any(f.module == _HASHERS for f in frames),
        importing=importing,
    )


def report(
    test: str, blocks: list[tuple[float, Block]], threshold: float, *, exact: bool = True
) -> str:
    """``exact``: the loop's iterations were timed (see ``_watchdog``); else pinged, and
    each time is how long a ping waited, at most a ping interval short of the block."""
    held, block = max(blocks, key=lambda pair: pair[0])
    times = f" ({len(blocks)} times; the longest is shown)" if len(blocks) > 1 else ""
    for_ = f"for {'' if exact else 'at least '}{held:.3f} s (blocking_threshold is {threshold:g} s)"
    if block is UNSAMPLED:
        return (
            f"The event loop was blocked {for_} in {test}{times}, but the watchdog thread did "
            "not get to run while it was, so where is not known, nor whose code it was: so it "
            "warns instead of failing. Run the test again to see the line."
        )
    if block.importing is not None:
        where = f", while Python imported {block.importing}"
    else:
        where = "" if block.package is None else f", inside {block.package}'s code"
    intro = (
        f"The event loop was blocked {for_} in {test}{where}{times}. While it was blocked, "
        f"its thread was running:\n{block.stack}"
    )
    if block.hashing:
        return intro + (
            "Django hashes passwords on the event loop (acreate_user, acheck_password, "
            "aset_password...), and its default hasher takes a fraction of a second by "
            "design. Use a fast hasher in the test settings: PASSWORD_HASHERS = "
            '["django.contrib.auth.hashers.MD5PasswordHasher"].'
        )
    if block.importing is not None:
        return intro + (
            f"Python was importing {block.importing}, which happens once per process: so it "
            "warns instead of failing. To keep the import off the loop, import the module at "
            "the top of the test module."
        )
    if block.package is not None:
        return intro + (
            f"The blocking call is {block.package}'s, which the test awaited, not the "
            "project's own: so it warns instead of failing. To silence it, add the module "
            "or function to blocking_allowed (or settings.DJASYNCTEST['BLOCKING_ALLOWED']); "
            "to fix it, run that call in a thread (await asyncio.to_thread(func)), or ask "
            f"{block.package}'s maintainers for a non-blocking one."
        )
    return intro + (
        "A blocking call stalls every task of the test. Await an async API instead "
        "(asyncio.sleep, an async HTTP client), or run the blocking code in a thread: "
        "await asyncio.to_thread(func) or await sync_to_async(func)(). To allow it, add "
        "its module or function to blocking_allowed, raise blocking_threshold, or set it "
        "to None."
    )


def fail_or_warn(
    test: str,
    blocks: list[tuple[float, Block]],
    threshold: float,
    *,
    mode: str,
    warn: Callable[[str], None],
    exact: bool = True,
) -> None:
    """After a run of the loop: report its blocks, the packages' as a warning (``warn``), the
    project's as ``LoopBlocked`` (``mode`` ``"fail"``) or a warning (``"warn"``)."""
    __tracebackhide__ = True
    own = [(held, block) for held, block in blocks if block.package is None]
    if len(own) < len(blocks):
        # A block inside a package's code never fails the test.
        packages = [(held, b) for held, b in blocks if b.package is not None]
        warn(report(test, packages, threshold, exact=exact))
    if own:
        text = report(test, own, threshold, exact=exact)
        if mode == "fail":
            raise LoopBlocked(text)
        warn(text)


def run_watched(
    run: Callable[[], T],
    coro: Coroutine[Any, Any, Any],
    test: str,
    *,
    watch: LoopWatch | None,
    deadline: Deadline | None,
    mode: str,
    warn: Callable[[str], None],
) -> T:
    """M: ``run()`` (which runs ``coro`` on the loop), watched by the blocking detector
    (``watch``) and the test's timeout (``deadline``); report what they saw."""
    __tracebackhide__ = True
    if deadline is not None:
        deadline.running(coro)
    if watch is not None:
        watch.start()
    blocks: list[tuple[float, Block]] = []
    try:
        try:
            result = run()
        finally:
            if watch is not None:
                blocks = [(held, block) for held, block in watch.stop() if not block.allowed]
            if deadline is not None:
                deadline.running(None)
    except asyncio.CancelledError:
        if deadline is None or deadline.report is None:
            raise
        raise deadline.error() from None
    except BaseException as exc:
        if blocks:
            assert watch is not None
            exc.add_note(report(test, blocks, watch.threshold, exact=not watch.pinged))
        raise
    if blocks:
        assert watch is not None
        fail_or_warn(test, blocks, watch.threshold, mode=mode, warn=warn, exact=not watch.pinged)
    return result
