"""The pytest plugin: async test functions and fixtures in the test's DB thread transaction.

Enabled with ``-p djasynctest.pytest`` (or ``pytest_plugins``, or ``addopts``).
How an item runs (M = pytest's thread, which runs the event loops and, as pytest
runs it, the sync code; D = the DB thread):

1. An item is *async-DB* when pytest-django sets its database up (``db``,
   ``transactional_db``, ``django_db``) and its test function or a fixture in
   its closure is ``async def``, or a scoped database fixture is open or in its
   closure (see ``_plugin_scopes``: ``db_module`` and the others). Other items
   run as pytest-django runs them.
2. For an async-DB item, pytest-django's ``_django_db_helper`` (the per-test
   ``TestCase``, its transaction) runs on D's connection objects, which M
   borrows (with a ``timeout``: on D), and M's context enters the routing
   context (see ``_routing``). Every coroutine run after that, by us or by
   pytest-asyncio, runs in a copy of M's context, so its thread-sensitive calls
   (the async ORM, ``async_client`` requests) go to D.
3. Its sync function fixtures and its sync test run as the test's sync code
   (``TestRun.sync``: here once D is idle; with a timeout, on D). Fixtures of
   pytest, pytest-asyncio, pytest-django's plugin module and this module are
   left alone.
4. Async fixtures and tests that pytest-asyncio does not claim (it is absent,
   or in strict mode and they are not its) run on our loops (see ``_loop``):
   a fixture on the loop of its scope (the ``_djasynctest_<scope>_loop``
   fixtures; the module's and the session's are the ones the test classes
   share), the test on the loop of its ``loop_scope``. Each run is watched by
   the blocking detector. ``_djasynctest_function_loop``, the first function
   fixture, is the test's ``Run``: it carries the test's timeout, and reports
   its leaks after the teardown of every other function fixture (an async-DB
   test's before its rollback, as a test class's).

This module holds pytest's hooks and the plugin's fixtures; ``_plugin_item`` an
item's options and state, ``_plugin_scopes`` the transactions of the scoped
database fixtures, ``_plugin_django`` and ``_plugin_asyncio`` all that touches
pytest-django's and pytest-asyncio's internals.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import unittest
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any, TypeVar

import pytest
from _pytest.fixtures import resolve_fixture_function

from djasynctest._conf import settings_configured
from djasynctest._dbthread import (
    running_db_thread,
)
from djasynctest._loop import (
    Loop,
    Run,
    close_shared_loops,
    entering_module,
    loop_for,
)
from djasynctest._plugin_asyncio import (
    asyncio_mode,
    claimed_by_pytest_asyncio,
    finish_pytest_asyncio_runs,
    is_pytest_asyncio_runner,
    is_pytest_asyncio_test,
    watch_pytest_asyncio_runner,
)
from djasynctest._plugin_django import (
    NUM_QUERIES,
    ON_COMMIT,
    STAY_ON_MAIN_THREAD,
    database_on_db_thread,
    is_transactional,
    sync_fixture,
    tool_on_db_thread,
)
from djasynctest._plugin_item import (
    INI,
    ITEM_RUN,
    PYTEST_OPTIONS,
    ItemRun,
    from_ini,
    is_async,
    module_name,
    now,
    options_of,
    warn_at_item,
)
from djasynctest._plugin_live import (  # the fixtures: pytest finds them here
    SCOPE_INI,
    _djasynctest_live_server,  # noqa: F401
    async_live_server,  # noqa: F401
    check_server_scope,
)
from djasynctest._plugin_scopes import (  # the fixtures: pytest finds them here
    DB_FIXTURES,
    RESTORED,
    SCOPES_KEY,
    _djasynctest_restored,  # noqa: F401
    before_item,
    db_class,  # noqa: F401
    db_module,  # noqa: F401
    db_package,  # noqa: F401
    db_session,  # noqa: F401
    scopes_of,
)
from djasynctest._plugin_scopes import fixture_setup as scoped_fixture_setup
from djasynctest._routing import (
    adopt,
)

__unittest = True

T = TypeVar("T")

_FUNCTION_LOOP = "_djasynctest_function_loop"


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
    parser.addini(
        SCOPE_INI,
        "djasynctest: the scope of async_live_server: function (default), class, module "
        "or session.",
        default="",
    )


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
                given[name] = from_ini(name, text)
            except TypeError as exc:
                raise pytest.UsageError(str(exc)) from None
    config.stash[INI] = given
    check_server_scope(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    # After every pytest_configure: a conftest.py may call settings.configure() in its own.
    if not settings_configured():
        msg = (
            "djasynctest.pytest runs tests with pytest-django's database, and Django's settings "
            "are not configured: set DJANGO_SETTINGS_MODULE = mysite.settings in the pytest "
            "configuration, or pass --ds=mysite.settings."
        )
        raise pytest.UsageError(msg)


# --- Items -------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    now.phase = "setup"
    if not isinstance(item, pytest.Function):
        return
    if _is_unittest(item):
        from django.test import TransactionTestCase

        if item.cls is not None and issubclass(item.cls, TransactionTestCase):
            scopes_of(item.config).close_all()  # its class transaction is its own
        return
    scoped = before_item(item, transactional=is_transactional(item))
    config = item.config
    fixturedefs = [defs[-1] for defs in item._fixtureinfo.name2fixturedefs.values() if defs]
    async_fixtures = [d for d in fixturedefs if is_async(d.func)]
    claimed_test = asyncio_mode(config) is not None and is_pytest_asyncio_test(item)
    async_test = inspect.iscoroutinefunction(item.obj)
    uses_db = bool(
        (async_test or async_fixtures or scoped)
        and ("_django_db_helper" in item.fixturenames or item.get_closest_marker("django_db"))
    )
    in_place = options_of(item).timeout is None
    runs = None
    if async_test and not claimed_test:
        runs = "loop"
    elif uses_db and not async_test and not in_place:
        runs = "db"
    needs_loop = runs == "loop" or any(
        d.scope == "function" and not claimed_by_pytest_asyncio(config, d.func)
        for d in async_fixtures
    )
    first = _first_function_fixture(item)
    if not DB_FIXTURES.isdisjoint(item.fixturenames):
        # Before the test's own fixtures: torn down after them.
        item.fixturenames.insert(first, RESTORED)
    if not (uses_db or needs_loop):
        return
    item.stash[ITEM_RUN] = ItemRun(uses_db=uses_db, runs=runs, in_place=in_place)
    if needs_loop and _FUNCTION_LOOP not in item.fixturenames:
        # First of the function fixtures: its timeout covers them all, and it
        # closes (reporting leaks) after their teardown.
        item.fixturenames.insert(first, _FUNCTION_LOOP)
        if uses_db and "django_db_setup" not in item.fixturenames:
            # The test databases (pytest-django's session fixture, which the db fixtures
            # request only as they run) are made before the test's timeout starts.
            item.fixturenames.insert(first, "django_db_setup")


def _first_function_fixture(item: pytest.Function) -> int:
    defs = item._fixtureinfo.name2fixturedefs
    return next(
        (
            i
            for i, name in enumerate(item.fixturenames)
            if defs.get(name) and defs[name][-1].scope == "function"
        ),
        len(item.fixturenames),
    )


def _is_unittest(item: pytest.Function) -> bool:
    return item.cls is not None and issubclass(item.cls, unittest.TestCase)


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    __tracebackhide__ = True
    test = pyfuncitem.stash.get(ITEM_RUN, None)
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
    outer_scope, now.fixture_scope = now.fixture_scope, fixturedef.scope
    try:
        with scoped_fixture_setup(fixturedef, request) as refused:
            replacement = refused or replacement
            if replacement is None:
                value = yield
            else:
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(fixturedef, "func", replacement)
                    value = yield
    finally:
        now.fixture_scope = outer_scope
    if is_pytest_asyncio_runner(fixturedef):
        watch_pytest_asyncio_runner(value, fixturedef, request)
    return value


@pytest.hookimpl
def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    scopes = request.config.stash.get(SCOPES_KEY, None)
    if scopes is not None:
        scopes.after_teardown(fixturedef)


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
    if is_async(func):
        if claimed_by_pytest_asyncio(request.config, func):
            return None
        return functools.partial(_on_loop, fixturedef.scope)
    test = request.node.stash.get(ITEM_RUN, None)
    if test is None or fixturedef.scope != "function":
        return None
    if fixturedef.argname == "_django_db_helper":
        return functools.partial(database_on_db_thread, test) if test.uses_db else None
    db = test.db
    if db is None:
        return None
    if fixturedef.argname in (*NUM_QUERIES, ON_COMMIT):
        return functools.partial(tool_on_db_thread, db)
    if getattr(func, "__module__", "").startswith(STAY_ON_MAIN_THREAD) or getattr(
        getattr(func, "__func__", func), "_force_asyncio_fixture", False
    ):
        return None
    return functools.partial(sync_fixture, test)


@pytest.fixture(scope="session")
def _djasynctest_connections(django_db_setup: None) -> Iterator[None]:
    """Close the DB thread's connections before pytest-django drops the test databases."""
    yield
    db = running_db_thread()
    if db is not None and not db.stopped:
        from django.db import connections

        db.call(connections.close_all)


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
                options_of(node),
                f"{node.nodeid}::{name}" if node.nodeid else name,
                warn=functools.partial(warn_at_item, node, function=False),
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


# --- What pytest is doing (for the runs on pytest-asyncio's loops) ----------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, Any, Any]:
    __tracebackhide__ = True
    now.item = item
    try:
        return (yield)
    finally:
        now.item = now.phase = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    __tracebackhide__ = True
    now.phase = "call"
    try:
        return (yield)
    finally:
        now.phase = None


# --- Loops -------------------------------------------------------------------------


@pytest.fixture(name=_FUNCTION_LOOP)
def _djasynctest_function_loop(request: pytest.FixtureRequest) -> Iterator[Run]:
    """The test's runs on the loop of its ``loop_scope``, watched (M)."""
    __tracebackhide__ = True
    node = request.node
    opts = options_of(node)
    if opts.loop_scope == "class":
        loop: Loop = request.getfixturevalue("_djasynctest_class_loop")
    elif opts.loop_scope == "test":
        # Named as pytest names it, as the notes that name the scope to the user do.
        entering_module(module_name(node))
        loop = Loop("function", debug=opts.loop_debug, loop_factory=opts.loop_factory)
    else:
        loop = loop_for(
            opts.loop_scope,
            module_name(node),
            debug=opts.loop_debug,
            loop_factory=opts.loop_factory,
        )
    run = Run(loop, opts, node.nodeid, warn=functools.partial(warn_at_item, node, function=True))
    test = node.stash.get(ITEM_RUN, None)
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


def _loop_fixture(scope: Any) -> Any:
    @pytest.fixture(scope=scope, name=f"_djasynctest_{scope}_loop")
    def loop(request: pytest.FixtureRequest) -> Iterator[Loop]:
        """M: the loop of the fixtures of this scope; a module's and the session's are
        shared with the test classes, and closed after the module's (the session's)
        last test (see pytest_runtest_teardown)."""
        opts = options_of(request.node)
        if scope in ("module", "session"):
            yield loop_for(
                scope,
                module_name(request.node),
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
    now.phase = "teardown"
    try:
        return (yield)
    finally:
        try:
            finish_pytest_asyncio_runs(item)
        finally:
            if nextitem is None:
                close_shared_loops()
            elif getattr(nextitem, "module", None) is not getattr(item, "module", None):
                close_shared_loops(scope="module", module=module_name(item))
