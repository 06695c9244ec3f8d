from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.utils")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Let the test cases that the tests build and run reach every test database.

    Each case manages its own transactions (that is what is under test), so the
    tests themselves run outside any transaction (``transaction=True``): what
    they read afterwards is what the case left behind.
    """
    for item in items:
        if isinstance(item, pytest.Function) and item.cls is None:
            item.add_marker(pytest.mark.django_db(transaction=True, databases="__all__"))


# A user's project that tests/test_runners.py runs in subprocesses.
collect_ignore = ["runnerproject"]
