"""Django setup and test databases when no Django-aware runner is in charge.

``python manage.py test`` and pytest-django call ``django.setup()``,
``setup_test_environment()`` and ``setup_databases()`` themselves. Plain
``python -m unittest`` does none of it, so the library does it, once per
process, on first use, and tears the test databases down at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

__unittest = True


def setup_django() -> None:
    """Call ``django.setup()`` if settings are named and the app registry is empty.

    This runs when ``djasynctest`` is imported, so that test modules imported
    after it by ``python -m unittest`` can import models at module level.
    """
    if not os.environ.get("DJANGO_SETTINGS_MODULE") or _imported_as_pytest_plugin():
        return
    from django.apps import apps

    if apps.ready or apps.loading:
        return
    import django

    django.setup()


def _imported_as_pytest_plugin() -> bool:
    """Whether pytest is importing the library as a plugin (``-p djasynctest.pytest``).

    pytest imports ``-p`` plugins before pytest-django has read ``--ds`` and put
    the project on ``sys.path``; pytest-django sets Django up itself right after.
    Done here, it would fail to import the settings, or import the wrong ones.
    """
    if "_pytest.config" not in sys.modules:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if (
            frame.f_code.co_name == "import_plugin"
            and frame.f_globals.get("__name__") == "_pytest.config"
        ):
            return True
        frame = frame.f_back
    return False


class _TestDatabases:
    """The test databases this process created itself, if any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.runner_managed: bool | None = None
        self.created: set[str] = set()
        self.old_config: list[Any] = []


_state = _TestDatabases()


def ensure_test_databases(aliases: Iterable[str]) -> None:
    """Make sure test databases exist for ``aliases`` (main thread, before the class runs).

    When a runner has already set up Django's test environment, it owns the
    test databases and nothing happens here.
    """
    global _state
    if _state.pid != os.getpid():
        # A forked worker: whatever the parent did belongs to the parent.
        _state = _TestDatabases()
    state = _state
    if state.runner_managed:
        return
    from django.db import connections
    from django.test.utils import setup_databases, setup_test_environment

    with state.lock:
        if state.runner_managed is None:
            try:
                setup_test_environment()
            except RuntimeError:
                # "setup_test_environment() was already called": a runner
                # (DiscoverRunner, pytest-django, a parallel worker) is in charge.
                state.runner_managed = True
                return
            state.runner_managed = False
            atexit.register(_teardown, state)
        missing = {alias for alias in aliases if alias in connections} - state.created
        if missing:
            state.old_config.extend(
                setup_databases(
                    # Django only tests membership: a set is what it gets from runners too.
                    verbosity=0,
                    interactive=False,
                    aliases=missing,  # type: ignore[arg-type]
                )
            )
            state.created |= missing


def _teardown(state: _TestDatabases) -> None:
    # Runs at interpreter exit, on the main thread, while the (daemon) DB
    # thread is still alive: its connections must close before the test
    # databases can be dropped.
    if state.pid != os.getpid():
        return
    from django.db import connections
    from django.test.utils import teardown_databases, teardown_test_environment

    from djasynctest._dbthread import running_db_thread

    db = running_db_thread()
    if db is not None and not db.stopped:
        # Bounded: a DB thread stuck in a query must not hang the exit.
        with contextlib.suppress(Exception):
            db.submit(connections.close_all).result(timeout=5)
    teardown_databases(state.old_config, verbosity=0)
    teardown_test_environment()
    # SQLite ignores close() on in-memory test databases; now that their
    # names are restored, the connections of both threads really close.
    if db is not None:
        db.stop(timeout=5)
    connections.close_all()
