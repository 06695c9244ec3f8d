"""The DB thread as an executor: results, errors, re-entry, shutdown, fork."""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
import warnings
from concurrent.futures import Future

import pytest

from djasynctest._dbthread import DBThread, db_thread


@pytest.fixture
def db() -> DBThread:
    thread = DBThread()
    yield thread  # type: ignore[misc]
    thread.shutdown()


def test_call_runs_on_the_thread_and_returns(db: DBThread) -> None:
    assert db.call(db.is_current) is True
    assert db.is_current() is False


def test_call_from_the_thread_itself_runs_in_place(db: DBThread) -> None:
    # A hook on the DB thread that calls another hook must not deadlock.
    assert db.call(lambda: db.call(lambda: 42)) == 42


def test_errors_keep_the_users_traceback(db: DBThread) -> None:
    def users_code() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError) as info:
        db.call(users_code)
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    # From the caller straight to the user's function: no executor internals.
    assert frames[-2:] == ["call", "users_code"]
    assert "_work" not in frames
    assert "result" not in frames


def test_submit_after_shutdown_is_a_clear_error() -> None:
    db = DBThread()
    db.shutdown()
    assert not db.thread.is_alive()
    with pytest.raises(RuntimeError, match=r"^The djasynctest DB thread has stopped, "):
        db.submit(print)


def _child_thread_ident(queue: multiprocessing.Queue[tuple[int, int, bool]]) -> None:
    thread = db_thread()
    queue.put((thread.thread.ident or 0, thread.pid, thread.call(thread.is_current)))


def test_forked_process_gets_its_own_db_thread() -> None:
    parent = db_thread()
    parent.call(int)  # make sure it runs before the fork
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[tuple[int, int, bool]] = context.Queue()
    with warnings.catch_warnings():
        # "This process is multi-threaded, use of fork() may lead to deadlocks"
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=_child_thread_ident, args=(queue,))
        child.start()
    _, pid, ran_there = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert pid == child.pid != os.getpid()
    assert ran_there is True
    assert db_thread() is parent


def test_serve_until_runs_work_queued_while_the_thread_waits(db: DBThread) -> None:
    """Code on the DB thread waiting for a thread that needs the DB thread must not deadlock."""

    def wait_for_helper() -> str:
        done: Future[str] = Future()
        helper = threading.Thread(target=lambda: done.set_result(db.call(lambda: "served")))
        helper.start()
        db.serve_until(done)
        helper.join()
        return done.result()

    assert db.call(wait_for_helper) == "served"


def test_a_fault_of_the_db_thread_itself_fails_the_job_not_the_thread() -> None:
    db = DBThread()
    broken = (object(), print, (), {})  # no future: the thread's own code fails on it
    db._jobs.put(broken)  # type: ignore[arg-type]
    assert db.call(int) == 0
    assert db.thread.is_alive()


def test_work_queued_on_a_stopping_db_thread_fails_clearly_and_never_waits() -> None:
    db = DBThread()
    gate = threading.Event()
    busy = db.submit(gate.wait)
    with db._lock:  # as if queued just before stop() took the lock
        db._closed = True
    db._jobs.put(None)
    late: Future[int] = Future()
    db._jobs.put((late, int, (), {}))
    gate.set()
    assert busy.result(timeout=5) is True
    db.thread.join(5)
    assert not db.thread.is_alive()
    with pytest.raises(RuntimeError, match=r"^The djasynctest DB thread has stopped, "):
        late.result(timeout=5)
    with pytest.raises(RuntimeError, match="The next test class starts a new DB thread"):
        db.call(int)


def test_idle_returns_once_the_job_running_now_has_finished(db: DBThread) -> None:
    """Sync code that shares the DB thread's connections waits for it to be idle."""
    started, go = threading.Event(), threading.Event()
    order: list[str] = []

    def job() -> None:
        started.set()
        go.wait(10)
        order.append("job")

    db.submit(job)
    started.wait(10)
    waiter = threading.Thread(target=lambda: (db.idle(), order.append("idle")))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive(), "idle() returned while a job was running"
    go.set()
    waiter.join(10)
    assert order == ["job", "idle"]


def test_idle_costs_no_job_when_nothing_is_queued_even_after_a_cancelled_one(
    db: DBThread,
) -> None:
    started, go = threading.Event(), threading.Event()
    db.submit(lambda: (started.set(), go.wait(10)))
    started.wait(10)
    db.submit(int).cancel()  # never runs
    go.set()
    db.idle()
    jobs = db.jobs_started
    db.idle()
    assert db.jobs_started == jobs


def test_idle_on_a_stopped_thread_waits_for_its_connections_to_close_and_says_why() -> None:
    closed: list[str] = []
    db = DBThread(on_stop=lambda: closed.append("closed"))
    db.stop(timeout=0)
    with pytest.raises(RuntimeError, match=r"^The djasynctest DB thread has stopped, "):
        db.idle()
    assert closed == ["closed"]
