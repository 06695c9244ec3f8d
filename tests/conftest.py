from __future__ import annotations

import random
from collections.abc import Iterator

import hypothesis
import pytest

from djasynctest._loop import close_shared_loops

pytest.register_assert_rewrite("tests.utils")

# The suite's hypothesis tests keep no example database in the work tree.
hypothesis.settings.register_profile("djasynctest", database=None)
hypothesis.settings.load_profile("djasynctest")


@pytest.fixture(autouse=True)
def _shared_loops_closed() -> Iterator[None]:
    """Each test starts and ends as a run of its own would: no module or session loop."""
    yield
    close_shared_loops()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("djasynctest", "order of the library's tests (tests/order.py)")
    group.addoption("--shuffle", type=int, metavar="SEED", help="run the tests in a random order")
    group.addoption("--reverse", action="store_true", help="run the tests in reverse order")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Let the test cases that the tests build and run reach every test database.

    Each case manages its own transactions (that is what is under test), so the
    tests themselves run outside any transaction (``transaction=True``): what
    they read afterwards is what the case left behind.
    """
    for item in items:
        if isinstance(item, pytest.Function) and item.cls is None:
            item.add_marker(pytest.mark.django_db(transaction=True, databases="__all__"))
    seed = config.getoption("--shuffle")
    if seed is not None:
        random.Random(seed).shuffle(items)
    if config.getoption("--reverse"):
        items.reverse()


# A user's project that tests/test_runners.py runs in subprocesses, and the
# release smoke test, which nox -s release runs against the installed wheel.
collect_ignore = ["runnerproject", "smoke"]
