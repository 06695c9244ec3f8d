"""Helpers to build test cases inside tests and run them as unittest would."""

from __future__ import annotations

import threading
import unittest
from typing import Any

from django.db import connections

from tests.testapp.models import Item, Order


def run_case(case_class: type[unittest.TestCase], *names: str) -> unittest.TestResult:
    """Run the named tests (all of them by default) of a class, with its class fixtures."""
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = None  # type: ignore[assignment]
    if names:
        suite = unittest.TestSuite(case_class(name) for name in names)
    else:
        suite = loader.loadTestsFromTestCase(case_class)
    result = unittest.TestResult()
    suite.run(result)
    return result


def problems(result: unittest.TestResult) -> list[str]:
    """Every error and failure, as the traceback text unittest keeps."""
    return [text for _, text in result.errors + result.failures]


def problems_by_test(result: unittest.TestResult) -> dict[str, str]:
    """Each error and failure's text, by the name of its test (or of its class-level hook)."""
    return {str(case).split()[0]: text for case, text in result.errors + result.failures}


def assert_passed(result: unittest.TestResult, count: int, *, skipped: int = 0) -> None:
    texts = problems(result)
    assert texts == [], "\n".join(texts)
    # Python 3.12.1 leaves tests skipped by a decorator out of testsRun.
    assert result.testsRun in {count, count - skipped}
    assert len(result.skipped) == skipped


def thread() -> str:
    """Where the caller runs: 'db' (the DB thread) or 'main' (the test's thread)."""
    name = threading.current_thread().name
    return "db" if name == "djasynctest-db" else "main" if name == "MainThread" else name


def leftover_rows() -> dict[str, Any]:
    """Rows committed to the test database, read from the test's own thread's connection."""
    return {
        "items": list(Item.objects.values_list("name", flat=True)),
        "orders": Order.objects.count(),
    }


def hang_in_a_query() -> None:
    """A query that never returns (until interrupted), on the caller's connection."""
    connection = connections["default"]
    if connection.vendor == "postgresql":
        sql = "SELECT pg_sleep(3600)"
    else:
        sql = (
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql)
