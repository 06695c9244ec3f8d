"""The pytest plugin: async test functions and fixtures in the test's DB thread transaction.

Enabled with ``-p djasynctest.pytest`` (or ``pytest_plugins``, or ``addopts``).
How an item runs (M = pytest's thread, which runs the event loops; D = the DB thread):

1. An item is *async-DB* when pytest-django sets its database up (``db``,
   ``transactional_db``, ``django_db``) and its test function or a fixture in
   its closure is ``async def``. Other items run as pytest-django runs them.
2. For an async-DB item, pytest-django's ``_django_db_helper`` (the per-test
   ``TestCase``, its transaction) runs on D, and M's context enters the routing
   context (see ``_routing``). Every coroutine run after that, by us or by
   pytest-asyncio, runs in a copy of M's context, so its thread-sensitive calls
   (the async ORM, ``async_client`` requests) go to D. At teardown the routing
   context is exited and the rest of the helper (the rollback) runs on D.
3. While its database is set up, the item's sync function-scoped fixtures and
   its sync test function run on D, in a copy of M's context whose changes come
   back to M (``adopt``) as if they had run there. Fixtures of pytest,
   pytest-asyncio, pytest-django's plugin module and this module stay on M.
4. Async fixtures and tests that pytest-asyncio does not claim (it is absent,
   or in strict mode and they are not its) run on our loops (see ``_loop``):
   a fixture on the loop of its scope (the ``_djasynctest_<scope>_loop``
   fixtures; the module's and the session's are the ones the test classes
   share), the test on the loop of its ``loop_scope``. Each run is watched by
   the blocking detector. ``_djasynctest_function_loop``, the first function
   fixture, is the test's ``Run``: it carries the test's timeout, and reports
   its leaks after the teardown of every other function fixture.
5. Django's connection-bound tools (``django_assert_num_queries``,
   ``django_assert_max_num_queries``, ``django_capture_on_commit_callbacks``)
   return context managers that are made, entered and exited on D.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import unittest
import warnings
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

import pytest
from _pytest.fixtures import resolve_fixture_function

from djasynctest._affinity import pin_together
from djasynctest._asyncbackend import (
    CapturedCallbacks,
    close_opened,
    opened_on,
    unwatch_opened,
    uses_async_backend,
    watch_opened,
)
from djasynctest._asyncbackend import bridge as bridge_async_backend
from djasynctest._asyncbackend import unbridge as unbridge_async_backend
from djasynctest._conf import Options, check_option, close_option, options, settings_configured
from djasynctest._dbthread import (
    DBThread,
    db_thread,
    lend_connections,
    running_db_thread,
)
from djasynctest._dbtools import (
    ConnectionState,
    OnDBThread,
    connect_receivers,
    connection_state,
    give_connection_state,
)
from djasynctest._diagnostics import warn_at
from djasynctest._loop import (
    Loop,
    Run,
    add_note,
    bound_elsewhere,
    close_shared_loops,
    entering_module,
    loop_for,
)
from djasynctest._routing import (
    adopt,
    enter_routing,
    exit_routing,
    route_loop,
    unroute_loop,
)
from djasynctest._testrun import TestRun

__unittest = True

T = TypeVar("T")

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
_FUNCTION_LOOP = "_djasynctest_function_loop"
# Fixtures that stay on M: they do not touch the database, and some cannot move
# (monkeypatch, capsys); pytest_django.fixtures (client, settings...) moves.
_STAY_ON_MAIN_THREAD = ("_pytest.", "pytest_asyncio.", "pytest_django.plugin", __name__)
_NUM_QUERIES = ("django_assert_num_queries", "django_assert_max_num_queries")
_ON_COMMIT = "django_capture_on_commit_callbacks"


# --- Configuration ---------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    helps = {
        "loop_scope": "the event loop of async tests: function (default), class, module or session",
        "loop_factory": "the dotted path of a callable that makes event loops (none: asyncio's)",
        "timeout": "seconds each async test may run (none: no limit, the default)",
        "blocking_threshold": "seconds a callback may hold the event loop (default 0.1; none: off)",
        "blocking_mode": "fail (default) or warn when the event loop is blocked",
        "blocking_allowed": "dotted names of modules or functions whose blocking is not reported",
        "leak_checks": "the leaks reported: some of tasks threads connections, or none",
        "task_creation_stacks": "true: show the whole stack where a leaked task was made",
        "loop_debug": "true: run the event loops in asyncio's debug mode",
    }
    for name in PYTEST_OPTIONS:
        parser.addini(f"djasynctest_{name}", f"djasynctest: {helps[name]}.", default="")


_INI = pytest.StashKey[dict[str, Any]]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        from pytest_django import plugin as django_plugin
    except ImportError:
        django_plugin = None  # type: ignore[assignment]
    if django_plugin is None or not config.pluginmanager.is_registered(django_plugin):
        msg = (
            "djasynctest.pytest runs tests with pytest-django's database, and pytest-django "
            "is not installed or is disabled: pip install pytest-django, and remove any "
            "-p no:django."
        )
        raise pytest.UsageError(msg)
    config.addinivalue_line(
        "markers",
        "djasynctest(loop_scope='function', loop_factory=None, timeout=None, "
        "blocking_threshold=0.1, blocking_mode='fail', "
        "blocking_allowed=(), leak_checks=('tasks', 'threads', 'connections'), "
        "task_creation_stacks=False, loop_debug=False): djasynctest's loop and diagnostics for "
        "this test's async code.",
    )
    given: dict[str, Any] = {}
    for name in PYTEST_OPTIONS:
        text = config.getini(f"djasynctest_{name}").strip()
        if text:
            try:
                given[name] = _from_ini(name, text)
            except TypeError as exc:
                raise pytest.UsageError(str(exc)) from None
    config.stash[_INI] = given


def _from_ini(name: str, text: str) -> Any:
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
    return _check_given(name, value, f"The ini option djasynctest_{name}")


_OPTIONS = pytest.StashKey[Options]()


def _options(node: pytest.Item | pytest.Collector) -> Options:
    """The options for ``node``: its closest marker's, then the ini's, then the settings'
    (resolved once per node)."""
    resolved = node.stash.get(_OPTIONS, None)
    if resolved is None:
        resolved = node.stash[_OPTIONS] = _resolve_options(node)
    return resolved


def _resolve_options(node: pytest.Item | pytest.Collector) -> Options:
    given = node.config.stash[_INI].copy()
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
                given[name] = _check_given(name, value, f"{name} in @pytest.mark.djasynctest")
            except TypeError as exc:
                # The message once: not the TypeError as well, "during handling" of which.
                raise pytest.fail.Exception(f"{node.nodeid}: {exc}", pytrace=False) from None
    # options() reads a test class's attributes; these stand in for them.
    return options(type("PytestOptions", (), given))


def _check_given(name: str, value: Any, where: str) -> Any:
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


def pytest_sessionstart(session: pytest.Session) -> None:
    # After every pytest_configure: a conftest.py may call settings.configure() in its own.
    if not settings_configured():
        msg = (
            "djasynctest.pytest runs tests with pytest-django's database, and Django's settings "
            "are not configured: set DJANGO_SETTINGS_MODULE = mysite.settings in the pytest "
            "configuration, or pass --ds=mysite.settings."
        )
        raise pytest.UsageError(msg)


# --- pytest-asyncio ----------------------------------------------------------------


def _asyncio_mode(config: pytest.Config) -> str | None:
    """pytest-asyncio's mode (``"strict"``, ``"auto"``), or None when it is not active."""
    if not config.pluginmanager.has_plugin("asyncio"):
        return None
    mode: str = config.getoption("asyncio_mode") or config.getini("asyncio_mode")
    return mode


def _claimed_by_pytest_asyncio(config: pytest.Config, func: Any) -> bool:
    """Whether pytest-asyncio runs this async fixture (auto mode, or its own decorator)."""
    mode = _asyncio_mode(config)
    return mode == "auto" or (
        mode is not None
        and getattr(getattr(func, "__func__", func), "_force_asyncio_fixture", False)
    )


def _is_async(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


# --- Items -------------------------------------------------------------------------


class _Test(TestRun):
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


_TEST = pytest.StashKey[_Test]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _now.phase = "setup"
    if not isinstance(item, pytest.Function) or _is_unittest(item):
        return
    config = item.config
    fixturedefs = [defs[-1] for defs in item._fixtureinfo.name2fixturedefs.values() if defs]
    async_fixtures = [d for d in fixturedefs if _is_async(d.func)]
    claimed_test = _asyncio_mode(config) is not None and _is_pytest_asyncio_test(item)
    async_test = inspect.iscoroutinefunction(item.obj)
    uses_db = bool(
        (async_test or async_fixtures)
        and ("_django_db_helper" in item.fixturenames or item.get_closest_marker("django_db"))
    )
    in_place = _options(item).timeout is None
    runs = None
    if async_test and not claimed_test:
        runs = "loop"
    elif uses_db and not async_test and not in_place:
        runs = "db"
    needs_loop = runs == "loop" or any(
        d.scope == "function" and not _claimed_by_pytest_asyncio(config, d.func)
        for d in async_fixtures
    )
    if not (uses_db or needs_loop):
        return
    item.stash[_TEST] = _Test(uses_db=uses_db, runs=runs, in_place=in_place)
    if needs_loop and _FUNCTION_LOOP not in item.fixturenames:
        # First of the function fixtures: its timeout covers them all, and it
        # closes (reporting leaks) after their teardown.
        defs = item._fixtureinfo.name2fixturedefs
        first = next(
            (
                i
                for i, name in enumerate(item.fixturenames)
                if defs.get(name) and defs[name][-1].scope == "function"
            ),
            len(item.fixturenames),
        )
        item.fixturenames.insert(first, _FUNCTION_LOOP)
        if uses_db and "django_db_setup" not in item.fixturenames:
            # The test databases (pytest-django's session fixture, which the db fixtures
            # request only as they run) are made before the test's timeout starts.
            item.fixturenames.insert(first, "django_db_setup")


def _is_unittest(item: pytest.Function) -> bool:
    return item.cls is not None and issubclass(item.cls, unittest.TestCase)


def _is_pytest_asyncio_test(item: pytest.Function) -> bool:
    from pytest_asyncio import is_async_test

    return is_async_test(item)


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    __tracebackhide__ = True
    test = pyfuncitem.stash.get(_TEST, None)
    if test is None:
        return None
    if test.runs is None:
        test.idle()  # then pytest calls the sync test here
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    if test.runs == "loop":
        run: Run = pyfuncitem.funcargs[_FUNCTION_LOOP]  # type: ignore[assignment]
        # What the test sets in its context ends with it.
        run.run(pyfuncitem.obj(**args), contextvars.copy_context())
        return True
    if test.db is None:
        return None
    test.sync(pyfuncitem.obj, **args)
    return True


# --- Fixtures ----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    # Outermost, so that it sees the fixture's own function; pytest-asyncio's
    # wrapper, inside, leaves alone the functions put in its place here.
    __tracebackhide__ = True
    replacement = _replacement(fixturedef, request)
    outer_scope, _now.fixture_scope = _now.fixture_scope, fixturedef.scope
    try:
        if replacement is None:
            value = yield
        else:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(fixturedef, "func", replacement)
                value = yield
    finally:
        _now.fixture_scope = outer_scope
    if _is_pytest_asyncio_runner(fixturedef):
        _watch_pytest_asyncio_runner(value, fixturedef, request)
    return value


def _replacement(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Callable[..., Any] | None:
    """What runs instead of a fixture's function, if anything."""
    build = _builder(fixturedef, request)
    if build is None:
        return None
    try:
        # The fixture's function, bound to the test's instance as pytest binds it.
        func = resolve_fixture_function(fixturedef, request)
    except Exception:
        return None  # pytest raises it again, its own way
    return build(func, fixturedef.argname, request)


_Builder = Callable[[Callable[..., Any], str, pytest.FixtureRequest], Callable[..., Any]]


def _builder(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> _Builder | None:
    func = fixturedef.func
    if _is_async(func):
        if _claimed_by_pytest_asyncio(request.config, func):
            return None
        return functools.partial(_on_loop, fixturedef.scope)
    test = request.node.stash.get(_TEST, None)
    if test is None or fixturedef.scope != "function":
        return None
    if fixturedef.argname == "_django_db_helper":
        return functools.partial(_database_on_db_thread, test) if test.uses_db else None
    db = test.db
    if db is None:
        return None
    if fixturedef.argname in (*_NUM_QUERIES, _ON_COMMIT):
        return functools.partial(_tool_on_db_thread, db)
    if getattr(func, "__module__", "").startswith(_STAY_ON_MAIN_THREAD) or getattr(
        getattr(func, "__func__", func), "_force_asyncio_fixture", False
    ):
        return None
    return functools.partial(_sync_fixture, test)


def _database_on_db_thread(
    test: _Test, helper: Callable[..., Generator[None]], name: str, request: pytest.FixtureRequest
) -> Callable[..., Generator[None]]:
    """pytest-django's per-test database (``_django_db_helper``), on D's connection objects:
    here, where pytest runs it (with a timeout, on D)."""

    def database(**kwargs: Any) -> Generator[None]:
        __tracebackhide__ = True
        db = db_thread(replace_stopped=True)
        connect_receivers()
        request.getfixturevalue("_djasynctest_connections")
        # The test's thread and D on one CPU while they hand work to each other
        # (see _affinity), as for a test class; settings.DJASYNCTEST["CPU_AFFINITY"].
        if _options(request.node).cpu_affinity:
            unpin = pin_together(db.thread.native_id)
            if unpin is not None:
                request.addfinalizer(unpin)
        steps = helper(**kwargs)
        # Undone in reverse, each step even when one before it fails.
        with contextlib.ExitStack() as undo:
            if test.in_place:
                state = connection_state()  # M's own
                undo.callback(lend_connections(db))
                db.idle()
                _first_database_step(steps, state)
            else:
                test.wait(db.submit(_first_database_step, steps, connection_state()))
            undo.callback(_last_database_step, test, db, steps, name)
            # M: from here on, thread-sensitive calls made in this context, and in
            # the copies that every fixture's and the test's coroutine runs in, go to D.
            undo.callback(exit_routing, enter_routing(db))
            bridged = _bridge_async_backend(request)
            if bridged is not None:
                undo.callback(unbridge_async_backend, bridged)
            elif uses_async_backend():
                test.opened, watch = watch_opened()
                undo.callback(_close_async_backend, test)  # before the flush
                undo.callback(unwatch_opened, watch)
            test.db = db
            undo.callback(setattr, test, "db", None)
            yield

    return database


def _bridge_async_backend(request: pytest.FixtureRequest) -> Any:
    """M: for a test in a rolled-back transaction (pytest-django's ``db``), the aliases
    whose django-async-backend connections join it (see _asyncbackend); None otherwise.

    pytest-django's own choice of test case, as ``_django_db_helper`` makes it.
    """
    if not uses_async_backend():
        return None
    from django.db import connections
    from pytest_django.fixtures import validate_django_db

    marker = request.node.get_closest_marker("django_db")
    transactional, reset_sequences, databases = False, False, None
    if marker is not None:
        transactional, reset_sequences, databases, _, _ = validate_django_db(marker)
    fixtures = request.fixturenames
    if (
        transactional
        or reset_sequences
        or not {
            "transactional_db",
            "live_server",
            "django_db_reset_sequences",
        }.isdisjoint(fixtures)
    ):
        return None
    if databases is None:
        return bridge_async_backend({"default"})
    return bridge_async_backend(set(connections) if databases == "__all__" else set(databases))


def _close_async_backend(test: _Test, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """M: the django-async-backend connections that a transactional test opened (on
    ``loop``, or on any), closed as the test ends, each on the loop it connected on: the
    test's, or one of pytest-asyncio's (idle between its runs; a test's own is closed
    before the test's database, so its runner's teardown closes them first). Those whose
    loop is gone (``async_to_sync`` in a sync fixture) are closed on the test's loop, or
    on one made for it, as an AsyncTransactionTestCase closes them all on its loop."""
    __tracebackhide__ = True
    opened = test.opened
    if not opened:
        return
    run = test.run
    ours = None if run is None or run.loop is None else run.loop.loop
    for on in opened_on(opened) if loop is None else [loop]:
        if on is ours or (on.is_closed() and ours is not None):
            assert run is not None
            run.run(close_opened(opened, on), contextvars.copy_context())
        elif not on.is_closed():
            on.run_until_complete(close_opened(opened, on))
        else:
            with asyncio.Runner() as runner:
                runner.run(close_opened(opened, on))


def _last_database_step(test: _Test, db: DBThread, steps: Generator[None], name: str) -> None:
    __tracebackhide__ = True
    if test.in_place:
        try:
            db.idle()
        except BaseException:
            _close(steps)  # pytest-django's database blocker must still be restored
            raise
        _rest(steps, name)
        return
    try:
        test.wait(db.submit(_rest, steps, name))
    except BaseException:
        if db.stopped:
            # Abandoned after a timeout: pytest-django's database blocker must
            # still be restored.
            _close(steps)
        raise


def _first_database_step(steps: Generator[None], state: ConnectionState) -> None:
    # D's connection objects (on D, or on M in place): what pytest-django's setup_databases
    # left on M's own (the serialized_rollback snapshot), which Django reads on these.
    give_connection_state(state)
    next(steps)


def _close(steps: Generator[Any]) -> None:
    with contextlib.suppress(ValueError):  # still running on the abandoned DB thread
        steps.close()


@pytest.fixture(scope="session")
def _djasynctest_connections(django_db_setup: None) -> Iterator[None]:
    """Close the DB thread's connections before pytest-django drops the test databases."""
    yield
    db = running_db_thread()
    if db is not None and not db.stopped:
        from django.db import connections

        db.call(connections.close_all)


def _sync_fixture(
    test: _Test, func: Callable[..., Any], name: str, request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """A sync fixture of an async-DB test, as the test's sync code (each step of a
    generator fixture)."""
    if not inspect.isgeneratorfunction(func):
        return functools.partial(test.sync, func)

    def steps(**kwargs: Any) -> Generator[Any]:
        __tracebackhide__ = True
        gen = func(**kwargs)  # runs none of its code
        yield test.sync(_first, gen, name)
        test.sync(_rest, gen, name)

    return steps


def _tool_on_db_thread(
    db: DBThread, make_tool: Callable[..., Any], name: str, request: pytest.FixtureRequest
) -> Callable[..., Any]:
    """A connection-bound tool of pytest-django whose context managers live on D."""
    counts = name in _NUM_QUERIES

    def fixture(**kwargs: Any) -> Callable[..., OnDBThread[Any]]:
        tool: Callable[..., Any] = make_tool(**kwargs)

        @functools.wraps(tool)
        def on_db_thread(*args: Any, **options: Any) -> OnDBThread[Any]:
            make = functools.partial(
                _counting_on_db_thread if counts else _made, tool, args, options
            )
            if name == _ON_COMMIT and uses_async_backend():
                # And django-async-backend's callbacks (see _asyncbackend).
                from django.db import DEFAULT_DB_ALIAS

                using = options.get("using", DEFAULT_DB_ALIAS)
                return CapturedCallbacks(db, make, using, options.get("execute", False))
            return OnDBThread(db, make)

        return on_db_thread

    return fixture


def _made(tool: Callable[..., T], args: Any, options: dict[str, Any]) -> T:
    return tool(*args, **options)


def _counting_on_db_thread(tool: Callable[..., Any], args: Any, options: dict[str, Any]) -> Any:
    # D. pytest-django counts on django.db.connection, a proxy that resolves to
    # the calling thread's connection each time: give it D's, so that the
    # test's code on M reads D's queries in what the context manager returns.
    if len(args) < 2 and options.get("connection") is None:
        from django.db import DEFAULT_DB_ALIAS, connections

        options = dict(options)
        options["connection"] = connections[options.pop("using", None) or DEFAULT_DB_ALIAS]
    return tool(*args, **options)


def _first(gen: Generator[T], name: str) -> T:
    __tracebackhide__ = True
    try:
        return next(gen)
    except StopIteration:
        raise ValueError(f"{name} did not yield a value") from None


def _rest(gen: Generator[Any], name: str) -> None:
    __tracebackhide__ = True
    try:
        next(gen)
    except StopIteration:
        return
    pytest.fail(f"fixture {name} has more than one yield", pytrace=False)


def _on_loop(
    scope: str, func: Callable[..., Any], name: str, request: pytest.FixtureRequest
) -> Callable[..., Generator[Any]]:
    """An async fixture, on our loop of its scope, in a copy of M's context.

    What it sets in its context is seen by the fixtures and the test after it,
    until its teardown (as with pytest-asyncio).
    """

    def on_loop(**kwargs: Any) -> Generator[Any]:
        __tracebackhide__ = True
        if scope == "function":
            loop: Run = request.getfixturevalue(_FUNCTION_LOOP)
        else:
            # Each run of a fixture of a longer scope gets a timeout of its own.
            node = request.node
            loop = Run(
                request.getfixturevalue(f"_djasynctest_{scope}_loop"),
                _options(node),
                f"{node.nodeid}::{name}" if node.nodeid else name,
                warn=functools.partial(_warn, node, function=False),
                test=False,
            )
        context = contextvars.copy_context()
        gen = func(**kwargs) if inspect.isasyncgenfunction(func) else None
        value = loop.run(func(**kwargs) if gen is None else _afirst(gen, name), context)
        tokens = adopt(context)
        try:
            yield value
            if gen is not None:
                loop.run(_arest(gen, name), context)
        finally:
            for token in reversed(tokens):
                token.var.reset(token)

    return on_loop


async def _afirst(gen: AsyncGenerator[T], name: str) -> T:
    __tracebackhide__ = True
    try:
        return await anext(gen)
    except StopAsyncIteration:
        raise ValueError(f"{name} did not yield a value") from None


async def _arest(gen: AsyncGenerator[Any], name: str) -> None:
    __tracebackhide__ = True
    try:
        await anext(gen)
    except StopAsyncIteration:
        return
    pytest.fail(f"fixture {name} has more than one yield", pytrace=False)


# --- pytest-asyncio's loops ----------------------------------------------------------
#
# pytest-asyncio runs the tests and fixtures it claims on asyncio.Runners of its
# own (its _<scope>_scoped_runner fixtures), calling their run(). Each runner's
# run() is replaced, on the instance, by one that runs the coroutine as a Run of
# ours (see _loop): watched by the blocking detector and the test's timeout, its
# tasks counted for the leak report, and, for an async-DB test, its loop routed
# to the DB thread (route 3), so that tasks started with an empty context
# (channels' WebsocketCommunicator) reach the test's transaction too.


class _Now:
    """What pytest is doing on M: the test item, its phase, the fixture being set up."""

    item: pytest.Item | None = None
    phase: str | None = None
    fixture_scope: str | None = None


_now = _Now()
_RUNS = pytest.StashKey[dict[int, Run]]()  # id(loop) -> the item's Run on that loop


def _is_pytest_asyncio_runner(fixturedef: pytest.FixtureDef[Any]) -> bool:
    name = fixturedef.argname
    return (
        name.startswith("_")
        and name.endswith("_scoped_runner")
        and getattr(fixturedef.func, "__module__", "") == "pytest_asyncio.plugin"
    )


def _watch_pytest_asyncio_runner(
    runner: Any, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    """M: run what pytest-asyncio runs on ``runner`` (a fixture's value) as ours run."""
    if not isinstance(runner, asyncio.Runner) or getattr(runner, "_djat_watched", False):
        return
    loop = Loop(fixturedef.scope, runner=runner)

    def run(coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None) -> T:
        __tracebackhide__ = True
        return _run_for_pytest_asyncio(loop, coro, context or contextvars.copy_context())

    runner.run = run  # type: ignore[method-assign]
    runner._djat_watched = True  # type: ignore[attr-defined]
    if fixturedef.scope == "function":
        # Before the runner closes its loop, cancelling what is left on it.
        item = request.node
        fixturedef.addfinalizer(functools.partial(_check_pytest_asyncio_leaks, item, loop))
        test = item.stash.get(_TEST, None)
        if test is not None:
            fixturedef.addfinalizer(functools.partial(_close_async_backend, test, loop.loop))


def _run_for_pytest_asyncio(
    loop: Loop, coro: Coroutine[Any, Any, T], context: contextvars.Context
) -> T:
    """M: ``coro`` on a loop of pytest-asyncio's, for the current test item."""
    __tracebackhide__ = True
    item = _now.item
    if item is None:
        return loop.run(coro, context)
    # The test's own code: its body, and its function-scoped fixtures. A fixture of
    # a longer scope, set up or torn down here, gets the watch and a timeout only.
    owned = _now.phase == "call" or (_now.phase == "setup" and _now.fixture_scope == "function")
    runs = item.stash.setdefault(_RUNS, {})
    watched = runs.get(id(loop.loop)) if owned else None
    if watched is None:
        watched = Run(
            loop,
            _options(item),
            item.nodeid,
            warn=functools.partial(_warn, item, function=owned),
            test=owned,
        )
        if owned:
            runs[id(loop.loop)] = watched
    test = item.stash.get(_TEST, None)
    db = None if test is None else test.db
    if db is not None:
        route_loop(loop.loop, db)
    try:
        return watched.run(coro, context)
    except RuntimeError as exc:
        if loop.scope in _PYTEST_SCOPES[:-1] and bound_elsewhere(exc):
            add_note(exc, _pytest_asyncio_loop_hint(loop.scope, _options(item).loop_scope))
        raise
    finally:
        if db is not None:
            unroute_loop(loop.loop)


_PYTEST_SCOPES = ("function", "class", "module", "package", "session")


def _pytest_asyncio_loop_hint(theirs: str, ours: str) -> str:
    """The fix for an object of another loop used on pytest-asyncio's loop of scope ``theirs``,
    by a test whose djasynctest ``loop_scope`` is ``ours`` (as the classes name it)."""
    ours = "function" if ours == "test" else ours
    said = (
        "djasynctest: an object bound to another event loop was used here: pytest-asyncio runs "
        f'this code on a loop of its own, of scope "{theirs}"'
    )
    gone = (
        "so an object kept from an earlier loop (a global async client, a lock, a queue) is "
        "bound to a loop that is gone"
    )
    if _PYTEST_SCOPES.index(ours) > _PYTEST_SCOPES.index(theirs):
        return (
            f'{said}, and not on the loop of djasynctest\'s loop_scope = "{ours}", {gone}. Set '
            f"pytest-asyncio's ini options asyncio_default_test_loop_scope = {ours} and "
            f"asyncio_default_fixture_loop_scope = {ours}, or disable pytest-asyncio "
            "(-p no:asyncio, and no asyncio_* ini options) to let djasynctest run the async "
            "tests."
        )
    return (
        f"{said}, {gone}. Set pytest-asyncio's ini options asyncio_default_test_loop_scope = "
        "session and asyncio_default_fixture_loop_scope = session to run every test on one "
        "loop, or make the object anew on each loop."
    )


def _check_pytest_asyncio_leaks(item: pytest.Item, loop: Loop) -> None:
    __tracebackhide__ = True
    watched = item.stash.get(_RUNS, {}).get(id(loop.loop))
    if watched is not None:
        watched.check_leaks()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, Any, Any]:
    __tracebackhide__ = True
    _now.item = item
    try:
        return (yield)
    finally:
        _now.item = _now.phase = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    __tracebackhide__ = True
    _now.phase = "call"
    try:
        return (yield)
    finally:
        _now.phase = None


# --- Loops -------------------------------------------------------------------------


def _warn(
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


@pytest.fixture(name=_FUNCTION_LOOP)
def _djasynctest_function_loop(request: pytest.FixtureRequest) -> Iterator[Run]:
    """The test's runs on the loop of its ``loop_scope``, watched (M)."""
    __tracebackhide__ = True
    node = request.node
    opts = _options(node)
    if opts.loop_scope == "class":
        loop: Loop = request.getfixturevalue("_djasynctest_class_loop")
    elif opts.loop_scope == "test":
        # Named as pytest names it, as the notes that name the scope to the user do.
        entering_module(_module_name(node))
        loop = Loop("function", debug=opts.loop_debug, loop_factory=opts.loop_factory)
    else:
        loop = loop_for(
            opts.loop_scope,
            _module_name(node),
            debug=opts.loop_debug,
            loop_factory=opts.loop_factory,
        )
    run = Run(loop, opts, node.nodeid, warn=functools.partial(_warn, node, function=True))
    test = node.stash.get(_TEST, None)
    if test is not None:
        test.run = run
    try:
        yield run
        run.check_leaks()
    finally:
        if test is not None:
            test.run = None
        run.close()
        if loop.scope == "function":
            loop.close()


def _module_name(node: pytest.Item | pytest.Collector) -> str:
    module = getattr(node, "module", None)
    return module.__name__ if module is not None else ""


def _loop_fixture(scope: Any) -> Any:
    @pytest.fixture(scope=scope, name=f"_djasynctest_{scope}_loop")
    def loop(request: pytest.FixtureRequest) -> Iterator[Loop]:
        """M: the loop of the fixtures of this scope; a module's and the session's are
        shared with the test classes, and closed after the module's (the session's)
        last test (see pytest_runtest_teardown)."""
        opts = _options(request.node)
        if scope in ("module", "session"):
            yield loop_for(
                scope,
                _module_name(request.node),
                debug=opts.loop_debug,
                loop_factory=opts.loop_factory,
            )
            return
        made = Loop(scope, debug=opts.loop_debug, loop_factory=opts.loop_factory)
        try:
            yield made
        finally:
            made.close()

    return loop


_djasynctest_class_loop = _loop_fixture("class")
_djasynctest_module_loop = _loop_fixture("module")
_djasynctest_package_loop = _loop_fixture("package")
_djasynctest_session_loop = _loop_fixture("session")


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """After the last test of a module (of the run), the loop it shared is closed, its
    tests' classes and fixtures torn down: pytest keeps a module's tests together."""
    __tracebackhide__ = True
    _now.phase = "teardown"
    try:
        return (yield)
    finally:
        try:
            # What pytest-asyncio ran for the test on loops that outlive it.
            runs = item.stash.get(_RUNS, {})
            try:
                for watched in runs.values():
                    watched.check_leaks()
            finally:
                for watched in runs.values():
                    watched.close()
                runs.clear()
        finally:
            if nextitem is None:
                close_shared_loops()
            elif getattr(nextitem, "module", None) is not getattr(item, "module", None):
                close_shared_loops(scope="module", module=_module_name(item))
