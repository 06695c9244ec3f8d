"""The DB thread: one worker thread for the database work of async code.

Django keeps one connection per alias *per thread*. A test's transactions
(the class atomic, the per-test atomic) live on the connection objects that
opened them, so every piece of database work of a test must use those same
objects. They are this thread's: async code's thread-sensitive calls run here
(``loop.run_in_executor`` / asgiref's thread-sensitive routing), and other
threads borrow the objects (``lend_connections``) while this one is idle
(``idle``), never at the same time. This module provides the thread as a
``concurrent.futures`` executor, so that both plain code (``call``) and
asyncio can use it.

It knows nothing about tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

from django.db import connections
from typing_extensions import ParamSpec

from djasynctest._affinity import unpinned
from djasynctest._routing import asgirefs_own_executor, forget_event_loop, lean_executor
from djasynctest._watchdog import now

__unittest = True

P = ParamSpec("P")
T = TypeVar("T")

# The future is a concurrent one, or an asyncio one when queued from a loop.
_Job = tuple[Any, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
# Queued when a future that serve_until() waits for is done.
_WAKE_UP: Any = ("wake up",)


class Hosted(Future[T], Generic[T]):
    """The future of a job whose caller, while it waits, runs what the job asks of it.

    A job submitted with ``DBThread.submit_hosted`` may call
    ``DBThread.ask_caller(fn)``: ``fn`` then runs on the thread that waits in
    ``wait()`` (the test's thread, which owns the test's event loop), while the
    DB thread serves its queue, so that what ``fn`` sends back to it runs too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self.add_done_callback(_wake_caller)

    def wait(self, timeout: float | None = None) -> None:
        """The caller: serve the job's requests until it is done, or raise TimeoutError."""
        __tracebackhide__ = True
        end = None if timeout is None else now() + timeout
        while not self.done():
            try:
                request = self.requests.get(timeout=None if end is None else max(0.0, end - now()))
            except queue.Empty:
                raise TimeoutError from None
            if request is not None:
                request()


def _wake_caller(future: Future[Any]) -> None:
    future.requests.put(None)  # type: ignore[attr-defined]


def wait(future: Future[Any], timeout: float | None = None) -> None:
    """Wait for a job (serving a hosted one's requests); ``TimeoutError`` after ``timeout``."""
    if isinstance(future, Hosted):
        future.wait(timeout)
    else:
        future.exception(timeout=timeout)


def outcome(future: Future[T]) -> T:
    """Wait for a job (see ``wait``) and return its result, or raise its exception.

    Raised as it is, without the frames of ``concurrent.futures``: the
    traceback goes from the caller straight to the code that raised.
    """
    __tracebackhide__ = True
    wait(future)
    exc = future.exception()
    if exc is not None:
        raise exc
    return future.result()


@lean_executor
class DBThread(Executor):
    """A single daemon thread that runs submitted callables one at a time."""

    def __init__(self, *, on_stop: Callable[[], object] | None = None) -> None:
        self._on_stop = on_stop
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._lock = threading.Lock()  # orders _closed with the last jobs queued
        self._closed = False
        self.busy = False  # running a job now (read by diagnostics on other threads)
        self.jobs_started = 0  # with busy: whether it is still in the same job
        self._queued = 0  # jobs queued (under _lock), and finished (by this thread): see idle()
        self._finished = 0
        self._objects: dict[str, Any] | None = None  # see connection_objects()
        # The threads that use them now: the ones that borrowed them (lend_connections).
        self.borrowers: set[int] = set()
        self._host: Hosted[Any] | None = None  # the job running now, if its caller serves it
        self.interrupted = False  # stopped because the run was interrupted (Ctrl-C)
        self.abandoned_by: str | None = None  # the test whose stuck code it was left in
        # The connections it opened (see _diagnostics.on_connection_created): those that
        # a timed-out test interrupts, and abandoning it closes; never a later thread's.
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._work, name="djasynctest-db", daemon=True)
        self.thread.start()

    def is_current(self) -> bool:
        """Whether the calling code runs on this thread."""
        return threading.current_thread() is self.thread

    def idle(self) -> None:
        """From another thread: return once every job queued so far has finished.

        Sync code of a test that uses this thread's connection objects in place
        (``lend_connections``) waits here first: a job that a cancelled task left
        running must end before another thread touches the same connection.
        Raises the stopped error if it stopped with work undone.
        """
        __tracebackhide__ = True
        if self._closed:
            # Its connections are being closed (on_stop): wait for that, and say why
            # the test's transaction is gone.
            # (One abandoned to stuck code had them closed from outside already.)
            if self.abandoned_by is None and not self.is_current() and self.thread.is_alive():
                self.thread.join()
            raise self._stopped_error()
        if self._finished != self._queued:
            self.call(int)  # one job at a time, in order: the earlier ones are done

    def connection_objects(self) -> dict[str, Any]:
        """This thread's connection object of each database alias (made on first use).

        They hold the test transactions. Django lets a connection object be used
        on the thread that made it, or on any while its thread-sharing count is
        up (``inc_thread_sharing``); these may be used on this thread and on the
        threads that borrow them (``lend_connections``), which take turns, and
        on no other: their ``validate_thread_sharing`` says so, and their count
        stays the user's (Django's own tests of it run swapped).
        """
        objects = self._objects
        if objects is None:
            objects = self._objects = self.call(_own_connection_objects, self.borrowers)
        return objects

    def owns(self, connection: Any) -> bool:
        """Whether ``connection`` is one of this thread's connection objects."""
        return self.is_current() or (
            self._objects is not None and self._objects.get(connection.alias) is connection
        )

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue ``fn``; from a running event loop, the result is an ``asyncio.Future``.

        The lean hop (``_routing._lean_call``, every async ORM call) awaits it;
        ``loop.run_in_executor`` takes it as it is too. Completing it from this
        thread with one ``call_soon_threadsafe`` saves the
        ``concurrent.futures.Future``, its locks and the second callback of the
        usual executor.
        """
        loop = asyncio._get_running_loop()
        if loop is not None and self.is_current():
            return self._run_under_loop(loop, fn, args, kwargs)  # type: ignore[return-value]
        future: Any = Future() if loop is None else loop.create_future()
        return self._queue(future, fn, args, kwargs)  # type: ignore[no-any-return]

    def submit_hosted(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Hosted[T]:
        """Queue ``fn`` from outside the DB thread; ``fn`` may ``ask_caller``."""
        return self._queue(Hosted(), fn, args, kwargs)  # type: ignore[no-any-return]

    def ask_caller(self, fn: Callable[[], T]) -> T:
        """On the DB thread, in a hosted job: run ``fn`` on the thread waiting for the job.

        Raises ``LookupError`` when nothing waits so (the job was not hosted).
        """
        __tracebackhide__ = True
        host = self._host
        if host is None or not self.is_current():
            raise LookupError("no caller serves the DB thread's current job")
        answer: Future[T] = Future()

        def request() -> None:
            # The caller's thread.
            try:
                answer.set_result(fn())
            except BaseException as exc:
                answer.set_exception(exc)

        host.requests.put(request)
        self.serve_until(answer)
        return outcome(answer)

    def _run_under_loop(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> asyncio.Future[Any]:
        # D, where sync code runs an event loop of its own (asyncio.run() in a
        # sync test), whose thread-sensitive calls come here: the DB thread is
        # busy running that very loop, so no queued job could ever run. Run it
        # now, as the sync code it is, in the test's transaction; hide the loop,
        # which waits for it anyway, from Django's async-unsafe check.
        future = loop.create_future()
        asyncio._set_running_loop(None)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc.with_traceback(_tail(exc)))
        else:
            future.set_result(result)
        finally:
            asyncio._set_running_loop(loop)
        return future

    @property
    def stopped(self) -> bool:
        """Whether it takes no more work: shut down, or dead."""
        return self._closed

    def _queue(self, future: Any, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        with self._lock:
            if self._closed:
                if self.pid != os.getpid():
                    # A forked child that inherited contexts routed here: run the
                    # work as asgiref would without us, on its own thread.
                    return asgirefs_own_executor().submit(fn, *args, **kwargs)
                raise self._stopped_error()
            self._jobs.put((future, fn, args, kwargs))
            self._queued += 1
        return future

    def _forked_away(self) -> None:
        """In the child of a fork: this thread is the parent's; take no work, and let the
        child's thread that forked (if it was this one) be a thread like any other."""
        self._lock = threading.Lock()
        self._closed = True
        self.busy = False
        self._host = None
        self.thread = _PARENTS_THREAD

    def _stopped_error(self) -> RuntimeError:
        if self.abandoned_by is not None:
            return RuntimeError(
                f"The djasynctest DB thread was abandoned when {self.abandoned_by} ran past "
                "its timeout in sync code that never returned: its connections were closed "
                "from outside, which rolled its transactions back, with the class's fixtures "
                "and setUpTestData. The class's remaining tests cannot run; the next test "
                "class starts a new DB thread."
            )
        return RuntimeError(
            "The djasynctest DB thread has stopped, and its connections were closed with it: "
            "no more work can run on it, and the work of the test class it served (its "
            "transactions included) is lost. The next test class starts a new DB thread."
        )

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the DB thread and return its result.

        The caller blocks until it is done. On the DB thread itself, ``fn``
        simply runs in place, so hooks that call each other never deadlock.
        """
        __tracebackhide__ = True
        if self.is_current():
            return fn(*args, **kwargs)
        future: Future[T] = self._queue(Future(), fn, args, kwargs)
        exc = future.exception()
        if exc is not None:
            # Raised here, as outcome() does: the traceback goes from the caller
            # straight to the user's code (one frame fewer on this hot path).
            raise exc
        return future.result()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.stop(timeout=None if wait else 0)

    def stop(self, timeout: float | None) -> None:
        """Finish the queued work, run ``on_stop`` and end; wait up to ``timeout`` seconds."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._jobs.put(None)
        if timeout != 0 and not self.is_current():
            self.thread.join(timeout)

    def abandon(self, test: str) -> None:
        """From another thread: give up on a DB thread stuck in ``test``'s code.

        It takes no more work, and what is queued fails at once; the caller
        closes its connections. If the stuck code ever returns, the thread ends.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.abandoned_by = test
        self._fail_queued_jobs()
        self._jobs.put(None)  # it ends if its code ever returns

    def serve_until(self, awaited: Future[Any]) -> None:
        """On the DB thread: run queued work until ``awaited`` is done.

        Code on the DB thread that waits for another thread which may itself
        need the DB thread (a test run from inside a sync test) waits here, so
        that the two do not deadlock.
        """
        assert self.is_current(), "serve_until() runs on the DB thread"
        awaited.add_done_callback(lambda _: self._jobs.put(_WAKE_UP))
        while not awaited.done():
            job = self._jobs.get()
            if job is None:
                self._jobs.put(None)  # shutting down: leave it for _work()
                awaited.result()
            elif job is not _WAKE_UP:
                self._run_or_fail(job)

    def _work(self) -> None:
        # Runs on the DB thread for its whole life.
        unpinned()
        try:
            while (job := self._jobs.get()) is not None:
                if job is not _WAKE_UP:
                    self._run_or_fail(job)
                del job
        finally:
            with self._lock:
                self._closed = True
            try:
                if self._on_stop is not None:
                    self._on_stop()
            finally:
                self._fail_queued_jobs()

    def _run_or_fail(self, job: _Job) -> None:
        # A fault of this module fails the job, not the thread.
        finished = self._finished
        try:
            self._run(job)
        except BaseException as exc:
            if self._finished == finished:
                self._finished += 1
            with contextlib.suppress(BaseException):
                _settle(job[0], exc, failed=True)

    def _fail_queued_jobs(self) -> None:
        # D, at its end (or the thread that abandons it): nothing may wait for
        # work that will never run.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None or job is _WAKE_UP:
                continue
            future = job[0]
            if isinstance(future, Future) and not future.set_running_or_notify_cancel():
                continue
            _settle(future, self._stopped_error(), failed=True)

    def _run(self, job: _Job) -> None:
        future, fn, args, kwargs = job
        del job
        on_loop = not isinstance(future, Future)
        if future.cancelled() if on_loop else not future.set_running_or_notify_cancel():
            self._finished += 1
            return
        # Work that arrives here directly (not through sync_to_async) must not
        # find a stale event loop left by an earlier call.
        forget_event_loop()
        # A job may serve others (serve_until): each has its own state.
        was_busy, self.busy = self.busy, True
        self.jobs_started += 1
        host, self._host = self._host, future if isinstance(future, Hosted) else None
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                # Its code is done with the connections (see idle()), before its caller,
                # which may then run sync code at once, learns its outcome.
                self._finished += 1
        except BaseException as exc:
            # Drop our frames from the traceback: it starts at fn.
            _settle(future, exc.with_traceback(_tail(exc)), failed=True)
            del exc
        else:
            _settle(future, result, failed=False)
        finally:
            self.busy = was_busy
            self._host = host


def _settle(future: Any, value: Any, *, failed: bool) -> None:
    """D: give a job's future its outcome, a concurrent one here, an asyncio one on its loop."""
    if not isinstance(future, Future):
        _complete_on_loop(future, value, failed=failed)
    elif failed:
        future.set_exception(value)
    else:
        future.set_result(value)


def _complete_on_loop(future: asyncio.Future[Any], value: Any, *, failed: bool) -> None:
    # D: hand the outcome to the future's loop; a closed loop waits for nothing.
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(_complete, future, value, failed)


def _complete(future: asyncio.Future[Any], value: Any, failed: bool) -> None:
    # The loop's thread.
    if not future.done():
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)


def _tail(exc: BaseException) -> Any:
    tb = exc.__traceback__
    return tb.tb_next if tb is not None and tb.tb_next is not None else tb


_lock = threading.Lock()
_current: DBThread | None = None
# Stands for the DB thread of the parent process in a forked child (never started).
_PARENTS_THREAD = threading.Thread(name="djasynctest-db (of the parent process)")


# This process's id, which a syscall would return each time (read for each test).
_pid = os.getpid()


def _after_fork_in_child() -> None:
    # A server process that a sync setUpClass forks starts on the DB thread's
    # thread, in its context: it must not think it is the DB thread, nor send its
    # thread-sensitive work to a thread that does not exist in it. db_thread()
    # starts a new one for the child on first use (it checks the pid).
    global _lock, _pid
    _lock = threading.Lock()
    _pid = os.getpid()
    if _current is not None:
        _current._forked_away()


os.register_at_fork(after_in_child=_after_fork_in_child)


def db_thread(*, replace_stopped: bool = False) -> DBThread:
    """The process's DB thread, started on first use (again after a fork).

    With ``replace_stopped`` (at the start of a test class), a DB thread that
    died is replaced by a new one.
    """
    global _current
    current = _current
    if current is not None and current.pid == _pid and not (replace_stopped and current.stopped):
        return current
    with _lock:
        if (
            _current is None
            or _current.pid != os.getpid()
            or (replace_stopped and _current.stopped)
        ):
            _current = DBThread(on_stop=_close_connections)
            # At exit, close its connections (a database cannot be dropped
            # while they are open), without waiting forever on a hung query.
            atexit.register(_current.stop, timeout=5)
        return _current


def _own_connection_objects(borrowers: set[int]) -> dict[str, Any]:
    # D.
    objects = {alias: connections[alias] for alias in connections}
    for connection in objects.values():
        connection.validate_thread_sharing = _shared_with(connection, borrowers)  # type: ignore[method-assign]
    return objects


def _shared_with(connection: Any, borrowers: set[int]) -> Callable[[], None]:
    """Django's ``validate_thread_sharing`` of ``connection``, which also lets the
    ``borrowers`` use it (Django's check raises on any other thread)."""
    validate = connection.validate_thread_sharing

    def validate_thread_sharing() -> None:
        if threading.get_ident() not in borrowers:
            validate()

    return validate_thread_sharing


def _nothing() -> None:
    pass


def lend_connections(db: DBThread) -> Callable[[], None]:
    """Make the DB thread's connection objects the calling thread's; return what undoes it.

    Django's ``connections`` keeps one object per alias per thread: from now on
    this thread's code (a test's sync code, Django's per-test set-up and rollback)
    uses the objects that hold the test's transactions, as the DB thread does.
    Called again before that is undone (a test of a class that lent them), it
    changes nothing, and neither does what it returns.
    """
    objects = db.connection_objects()
    me = threading.get_ident()
    if me in db.borrowers:
        return _nothing
    own = {}
    for alias, connection in objects.items():
        own[alias] = connections[alias]
        connections[alias] = connection
    db.borrowers.add(me)

    def give_back() -> None:
        db.borrowers.discard(me)
        for alias, connection in own.items():
            connections[alias] = connection

    return give_back


def _close_connections() -> None:
    # D, as it stops: end its transactions (the class and per-test atomics of
    # a class cut short) and close its connections, at the driver where Django
    # would refuse (it never closes an in-memory SQLite connection, nor rolls
    # back inside an atomic block), so that the next DB thread finds no lock.
    from django.conf import settings

    if not settings.configured:
        return  # settings never read (none were named): nothing was connected
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None:
            continue
        with contextlib.suppress(Exception):
            if connection.in_atomic_block:
                raw.rollback()
            if connection.vendor == "sqlite" and connection.is_in_memory_db():  # type: ignore[attr-defined]
                raw.close()  # the database lives on in the test runner's connection
    connections.close_all()


def running_db_thread() -> DBThread | None:
    """The process's DB thread if it has been started, without starting one."""
    current = _current
    if current is not None and current.pid == _pid:
        return current
    return None
