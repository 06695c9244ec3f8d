"""Fully async Django tests on ``unittest.IsolatedAsyncioTestCase``."""

from __future__ import annotations

from djasynctest._bootstrap import setup_django

# Under plain ``python -m unittest``, test modules imported after this one may
# import models at module level: set Django up first (only when
# DJANGO_SETTINGS_MODULE is set and the app registry is not ready yet).
setup_django()

from djasynctest._case import (  # noqa: E402
    AsyncSimpleTestCase,
    AsyncTestCase,
    AsyncTestMixin,
    AsyncTransactionTestCase,
)
from djasynctest._diagnostics import (  # noqa: E402
    BlockingWarning,
    LoopBlocked,
    PendingTaskWarning,
    TestTimeout,
)
from djasynctest._live import AsyncLiveServerTestCase  # noqa: E402
from djasynctest._loop import at_loop_close  # noqa: E402

__version__ = "0.1.0.dev0"

__all__ = (
    "AsyncLiveServerTestCase",
    "AsyncSimpleTestCase",
    "AsyncTestCase",
    "AsyncTestMixin",
    "AsyncTransactionTestCase",
    "BlockingWarning",
    "LoopBlocked",
    "PendingTaskWarning",
    "TestTimeout",
    "at_loop_close",
)
