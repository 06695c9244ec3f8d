"""Django's TestCase and TransactionTestCase replaced by djasynctest's, on import.

As pytest's ``-p djasynctest_swap`` (before any test module), it also writes how
many collected tests run on djasynctest's classes to $DJASYNCTEST_SWAP_COUNT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django.test

import djasynctest

django.test.TransactionTestCase = djasynctest.AsyncTransactionTestCase  # type: ignore[misc]
django.test.TestCase = djasynctest.AsyncTestCase  # type: ignore[misc]


def record(count: int) -> None:
    path = os.environ.get("DJASYNCTEST_SWAP_COUNT")
    if path:
        Path(path).write_text(str(count))


def pytest_collection_finish(session: Any) -> None:
    record(
        sum(
            1
            for item in session.items
            if isinstance(getattr(item, "cls", None), type)
            and issubclass(item.cls, djasynctest.AsyncTestMixin)
        )
    )
