"""The pytest plugin's view of one test item: its options and what the plugin does for it.

Options come from the item's closest ``@pytest.mark.djasynctest``, then the ini
options ``djasynctest_<name>``, then ``settings.DJASYNCTEST``; they are resolved
once per node (``options_of``). ``ItemRun`` is the item's ``TestRun``; ``now`` is
what pytest is doing on M.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any

import pytest

from djasynctest._conf import Options, check_option, close_option, options
from djasynctest._diagnostics import warn_at
from djasynctest._testrun import TestRun

__unittest = True


#: The options a test sets with ``@pytest.mark.djasynctest(...)`` or the ini option
#: ``djasynctest_<name>``; the others of ``settings.DJASYNCTEST`` are for test classes.
PYTEST_OPTIONS = (
    "loop_scope",
    "loop_factory",
    "timeout",
    "blocking_threshold",
    "blocking_mode",
    "blocking_allowed",
    "leak_checks",
    "task_creation_stacks",
    "loop_debug",
)


#: ``loop_scope`` in the marker and the ini option: pytest's names. (A loop per
#: package is not one of them: pytest scopes a package fixture to the package that
#: defines it, and this module's to the session.)
LOOP_SCOPES = ("function", "class", "module", "session")


INI = pytest.StashKey[dict[str, Any]]()


def from_ini(name: str, text: str) -> Any:
    value: Any = text
    words = value.replace(",", " ").split()
    if name == "loop_scope":
        pass  # a name, as it is
    elif name == "loop_factory" and value.lower() == "none":
        value = None
    elif value.lower() == "none":
        value = () if name in ("blocking_allowed", "leak_checks") else None
    elif name in ("timeout", "blocking_threshold"):
        with contextlib.suppress(ValueError):
            value = float(value)
    elif name in ("task_creation_stacks", "loop_debug"):
        value = {"true": True, "false": False}.get(value.lower(), value)
    elif name in ("blocking_allowed", "leak_checks"):
        value = words
    return check_given(name, value, f"The ini option djasynctest_{name}")


_OPTIONS = pytest.StashKey[Options]()


def options_of(node: pytest.Item | pytest.Collector) -> Options:
    """The options for ``node``: its closest marker's, then the ini's, then the settings'
    (resolved once per node)."""
    resolved = node.stash.get(_OPTIONS, None)
    if resolved is None:
        resolved = node.stash[_OPTIONS] = _resolve_options(node)
    return resolved


def _resolve_options(node: pytest.Item | pytest.Collector) -> Options:
    given = node.config.stash[INI].copy()
    for mark in reversed(list(node.iter_markers("djasynctest"))):
        if mark.args:
            pytest.fail(
                f"{node.nodeid}: @pytest.mark.djasynctest takes its options by name, "
                "as in @pytest.mark.djasynctest(timeout=5).",
                pytrace=False,
            )
        for name, value in mark.kwargs.items():
            if name not in PYTEST_OPTIONS:
                close = close_option(name)
                hint = f"did you mean {close}? " if close in PYTEST_OPTIONS else ""
                pytest.fail(
                    f"{node.nodeid}: {name} is not an option of @pytest.mark.djasynctest; "
                    f"{hint}the options are {', '.join(PYTEST_OPTIONS)}.",
                    pytrace=False,
                )
            try:
                given[name] = check_given(name, value, f"{name} in @pytest.mark.djasynctest")
            except TypeError as exc:
                # The message once: not the TypeError as well, "during handling" of which.
                raise pytest.fail.Exception(f"{node.nodeid}: {exc}", pytrace=False) from None
    # options() reads a test class's attributes; these stand in for them.
    return options(type("PytestOptions", (), given))


def check_given(name: str, value: Any, where: str) -> Any:
    """An option of a marker or an ini option, checked; its value as the classes take it."""
    if name != "loop_scope":
        return check_option(name, value, where)
    if value not in LOOP_SCOPES:
        msg = (
            f"{where} is {value!r}; it must be 'function' (a new event loop for each test), "
            "'class' (one for each class), 'module' (one for each test module) or 'session' "
            "(one for the whole run)."
        )
        raise TypeError(msg)
    # pytest names the scope of one test "function"; a test class's option, "test".
    return "test" if value == "function" else value


def is_async(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


class ItemRun(TestRun):
    """What the plugin does for one test item (M); its sync code: ``TestRun.sync``."""

    def __init__(self, *, uses_db: bool, runs: str | None, in_place: bool) -> None:
        # Its sync code (pytest-django's database fixture, sync fixtures and test) runs
        # here, as pytest runs it, on D's connection objects; with a timeout, on D.
        # ``db`` is set while its database is, ``run`` once it has a loop.
        super().__init__(in_place=in_place)
        self.uses_db = uses_db  # async-DB: its database is on D's connection objects
        self.runs = runs  # "loop": its async test runs on our loop; "db": its sync test on D
        # The django-async-backend wrappers that connected in its transactional test,
        # each with its loop (see _asyncbackend.watch_opened).
        self.opened: list[Any] | None = None


ITEM_RUN = pytest.StashKey[ItemRun]()


class Now:
    """What pytest is doing on M: the test item, its phase, the fixture being set up."""

    item: pytest.Item | None = None
    phase: str | None = None
    fixture_scope: str | None = None


now = Now()


def warn_at_item(
    node: pytest.Item | pytest.Collector,
    message: str,
    category: type[Warning],
    *,
    function: bool,
) -> None:
    """Warn at the test function's line, where users look (else at the caller's)."""
    __tracebackhide__ = True
    module = getattr(getattr(node, "module", None), "__name__", "")
    if not (function and warn_at(getattr(node, "function", None), module, message, category)):
        warnings.warn(message, category, stacklevel=3)


def module_name(node: pytest.Item | pytest.Collector) -> str:
    module = getattr(node, "module", None)
    return module.__name__ if module is not None else ""
