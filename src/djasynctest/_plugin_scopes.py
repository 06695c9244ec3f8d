"""Database fixtures of any scope for pytest: ``db_session``, ``db_package``,
``db_module``, ``db_class``.

A fixture of a scope wider than a test's that asks for ``db_<scope>`` (directly,
or through another such fixture) is a *scoped database fixture*: its rows live
in its scope's transaction, opened (a savepoint inside the wider scope's) when
pytest sets ``db_<scope>`` up, and rolled back when pytest tears it down. Each
``db_<scope>`` asks for the next wider one, so the transactions always nest in
scope order; every test's own transaction (pytest-django's ``db``) nests inside.

All of it is on D's connection objects, which hold the tests' transactions too:
M borrows them (``lend_connections``) to open and roll back a scope and to run
a scoped fixture's sync code; its async code reaches D through the routing
context, as a test's does. While a scope is open, every test that uses the
database runs as an async-DB item (on those objects), and pytest-django's
database blocker lets a scoped fixture's code through while it runs, and no
other code outside a test's database.

What cannot run inside the scopes closes them first (``before_item``): a
transactional test (it commits and flushes), a test class of Django's or ours
(their class-level transactions and flushes are their own), and any test after
D was abandoned (which ended the scopes' transactions). pytest then tears the
scoped fixtures down, and sets them up again, with their rows, for the next test
that asks for one.

What a test changes in the scoped database fixtures' objects is put back after
it (``restored``), as their rows are: it never reaches the next test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import ThreadSensitiveContext

from djasynctest._dbthread import DBThread, db_thread, lend_connections
from djasynctest._plugin_django import databases_set_up
from djasynctest._plugin_item import now
from djasynctest._routing import enter_routing, exit_routing

__unittest = True

SCOPES = ("session", "package", "module", "class")
DB_FIXTURES = frozenset(f"db_{scope}" for scope in SCOPES)
RESTORED = "_djasynctest_restored"
_WIDTH = {"session": 0, "package": 1, "module": 2, "class": 3, "function": 4}


@dataclasses.dataclass(eq=False)
class _Level:
    """A transaction of one scoped database fixture (``db_<scope>`` or the user's): a
    savepoint inside the one before it, or the outermost transaction, on each test
    database, on ``db``'s connection objects."""

    name: str
    scope: str
    where: str
    db: DBThread
    atomics: list[tuple[str, Any]]
    blocker: Any
    fixturedef: pytest.FixtureDef[Any]
    request: pytest.FixtureRequest
    access: _Access | None = None  # for the user's fixture code

    def describe(self) -> str:
        return f"the transaction of {self.scope} fixture {self.name!r} ({self.where or 'the run'})"

    def finish(self) -> None:
        """M: have pytest tear the fixture down (and the fixtures that use it)."""
        self.fixturedef.finish(self.request)  # type: ignore[arg-type]


class Scopes:
    """M: the open transactions of the run's scoped database fixtures, outermost first."""

    def __init__(self) -> None:
        self.levels: list[_Level] = []
        self.fixtures: set[str] = set()  # the user's scoped database fixtures seen so far
        self._aliases: list[str] | None = None
        # name: (the value of a scoped database fixture, what it held when made)
        self.snapshots: dict[str, tuple[Any, _Snapshot]] = {}

    def aliases(self, session: pytest.Session) -> list[str]:
        """The test databases of the run: those pytest-django sets up for its tests."""
        if self._aliases is None:
            from django.db import connections

            wanted = databases_set_up(session.items)
            self._aliases = [alias for alias in connections if alias in wanted]
        return self._aliases

    def close_above(self, level: _Level | None) -> None:
        """M: tear down the fixtures whose transactions nest inside ``level`` (all of
        them: None), innermost first; pytest sets them up again when next asked for."""
        while self.levels and self.levels[-1] is not level:
            top = self.levels[-1]
            top.finish()
            if self.levels and self.levels[-1] is top:  # pytest had nothing to finish
                self._close(top)

    def close_all(self) -> None:
        self.close_above(None)

    def after_teardown(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        """M, after pytest tore a fixture down: if it had a transaction, roll it back."""
        for level in reversed(self.levels):
            if level.fixturedef is fixturedef:
                self.close_above(level)
                self._close(level)
                return

    def _close(self, level: _Level) -> None:
        self.levels.remove(level)
        try:
            if level.access is not None:
                level.access.end()
        finally:
            # A DB thread that was abandoned ended these transactions from outside.
            if not level.db.stopped:
                with level.blocker.unblock(), _borrowed(level.db):
                    _roll_back(level.atomics)


SCOPES_KEY = pytest.StashKey[Scopes]()


def scopes_of(config: pytest.Config) -> Scopes:
    return config.stash.setdefault(SCOPES_KEY, Scopes())


@contextlib.contextmanager
def fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any] | None]:
    """M, around pytest's set-up of any fixture. A scoped database fixture gets a
    transaction of its own (rolled back after its teardown: ``after_teardown``) and,
    for its code (teardown too), database access. What cannot be set up is refused
    with what it yields: a function that raises the error in the fixture's place."""
    __tracebackhide__ = True
    scopes = scopes_of(request.config)
    name, scope = fixturedef.argname, fixturedef.scope
    ours = name in DB_FIXTURES
    if scope == "function" or not (ours or _asks_for_database(scopes, fixturedef.argnames)):
        yield None
        return
    refused: BaseException | None = None
    try:
        level = _open_level(scopes, fixturedef, request)
    except (Exception, pytest.fail.Exception) as exc:
        refused = exc
    if refused is not None:
        # Raised by the fixture, as pytest reports a fixture's error; then forgotten, so
        # that a later test may set the fixture up.
        try:
            yield functools.partial(_raise, refused)
        finally:
            fixturedef.finish(request)  # type: ignore[arg-type]
        return
    try:
        if not ours:
            level.access = _Access(level.db, level.blocker)
            level.access.open()
        yield None
    except BaseException:
        scopes.after_teardown(fixturedef)  # its rows, rolled back now
        raise
    finally:
        if level.access is not None:
            level.access.close()
    # First of its teardown: the fixtures whose transactions nest in its own go
    # first, and its code gets database access again.
    fixturedef.addfinalizer(functools.partial(_before_teardown, scopes, level))


def _open_level(
    scopes: Scopes, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> _Level:
    __tracebackhide__ = True
    name, scope = fixturedef.argname, fixturedef.scope
    _make_room(scopes, name, scope)
    if name not in DB_FIXTURES:
        scopes.fixtures.add(name)
        request.getfixturevalue(f"db_{scope}")  # its scope's transaction, open
    aliases = scopes.aliases(request.session)
    if not aliases:
        msg = (
            f"{name} makes rows in the test databases, and this run has none: "
            "pytest-django makes them for the tests that use the database. Mark the tests "
            "that use the scoped fixtures with @pytest.mark.django_db, or have them ask for db."
        )
        pytest.fail(msg, pytrace=False)
    from django.db import transaction

    db = scopes.levels[0].db if scopes.levels else db_thread(replace_stopped=True)
    blocker = request.getfixturevalue("django_db_blocker")
    atomics: list[tuple[str, Any]] = []
    with blocker.unblock(), _borrowed(db), contextlib.ExitStack() as undo:
        for alias in aliases:
            atomic = transaction.atomic(using=alias)
            atomic.__enter__()
            atomics.append((alias, atomic))
            undo.callback(_roll_back, [(alias, atomic)])
        undo.pop_all()
    level = _Level(name, scope, request.node.nodeid, db, atomics, blocker, fixturedef, request)
    scopes.levels.append(level)
    return level


def _raise(error: BaseException, **kwargs: Any) -> None:
    __tracebackhide__ = True
    raise error


def _before_teardown(scopes: Scopes, level: _Level) -> None:
    scopes.close_above(level)
    if level.access is not None:
        level.access.open()


def _roll_back(atomics: list[tuple[str, Any]]) -> None:
    """Roll back each of ``atomics``, innermost first, each even if one before fails."""
    from django.db import transaction

    with contextlib.ExitStack() as undo:
        for alias, atomic in atomics:
            undo.callback(atomic.__exit__, None, None, None)
            undo.callback(transaction.set_rollback, True, using=alias)


@contextlib.contextmanager
def _borrowed(db: DBThread) -> Iterator[None]:
    """M: D's connection objects, once D is idle."""
    db.idle()
    give_back = lend_connections(db)
    try:
        yield
    finally:
        give_back()


def _make_room(scopes: Scopes, name: str, scope: str) -> None:
    """Before ``name``'s transaction opens: close the narrower ones open (pytest sets
    their fixtures up again when next asked for), so that its rows live as long as its
    scope. If the test being set up holds a fixture of theirs already, or one is being
    set up (``name`` asked for from inside a narrower scope), refuse with the fix."""
    __tracebackhide__ = True
    narrower = [level for level in scopes.levels if _WIDTH[level.scope] > _WIDTH[scope]]
    item = now.item
    held = [
        level
        for level in narrower
        if level.fixturedef.cached_result is None
        or (item is not None and level.name in getattr(item, "funcargs", {}))
    ]
    if item is not None and "_django_db_helper" in getattr(item, "funcargs", {}):
        inside = f"the transaction of test {item.nodeid}"  # set up: a dynamic request
    elif held:
        inside = held[-1].describe()
    else:
        if narrower:
            scopes.close_above(_level_before(scopes, narrower[0]))
        return
    msg = (
        f"Fixture {name!r} ({scope} scope) is set up inside {inside}, which is in use: "
        f"its rows would be rolled back when that ends, while pytest keeps {name!r} for "
        f"the {scope}. Have pytest set it up first: ask for it as an argument (pytest "
        "sets wider fixtures up first) rather than with request.getfixturevalue(), or "
        "make it autouse in the conftest.py that holds it."
    )
    pytest.fail(msg, pytrace=False)


def _level_before(scopes: Scopes, level: _Level) -> _Level | None:
    index = scopes.levels.index(level)
    return scopes.levels[index - 1] if index else None


class _Access:
    """M, for a scoped fixture: while its code runs (``open`` to ``close``), D's
    connection objects and database access through pytest-django's blocker; from its
    set-up to the end of its teardown (``end``), thread-sensitive calls routed to D
    (a loop's context copied at its set-up keeps the routing for its teardown)."""

    def __init__(self, db: DBThread, blocker: Any) -> None:
        self.db = db
        self.blocker = blocker
        self._routing: ThreadSensitiveContext | None = enter_routing(db)
        self._undo: contextlib.ExitStack | None = None

    def open(self) -> None:
        if self._undo is not None:
            return
        with contextlib.ExitStack() as undo:
            # As a scope's transaction is opened and rolled back (_open_level, _close).
            undo.enter_context(self.blocker.unblock())
            undo.enter_context(_borrowed(self.db))
            self._undo = undo.pop_all()

    def close(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo.close()

    def end(self) -> None:
        routing, self._routing = self._routing, None
        try:
            self.close()
        finally:
            if routing is not None:
                exit_routing(routing)


def _asks_for_database(scopes: Scopes, argnames: tuple[str, ...]) -> bool:
    return not (DB_FIXTURES.isdisjoint(argnames) and scopes.fixtures.isdisjoint(argnames))


# The database for fixtures of a scope (each of them, and each fixture that asks
# for one, gets a transaction in fixture_setup): each asks for the next wider
# one, so that their transactions nest in scope order.


@pytest.fixture(scope="session")
def db_session(django_db_setup: None, _djasynctest_connections: None) -> None:
    """The database for session fixtures: what they make is rolled back after the run."""


@pytest.fixture(scope="package")
def db_package(db_session: None) -> None:
    """The database for package fixtures: rolled back after the package's tests."""


@pytest.fixture(scope="module")
def db_module(db_package: None) -> None:
    """The database for module fixtures: rolled back after the module's tests."""


@pytest.fixture(scope="class")
def db_class(db_module: None) -> None:
    """The database for class fixtures: rolled back after the class's tests."""


@pytest.fixture(name=RESTORED)
def _djasynctest_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """The values of the test's scoped database fixtures, put back after it."""
    with restored(request):
        yield


def before_item(item: pytest.Item, *, transactional: bool) -> bool:
    """M, before pytest sets ``item`` up: close the scopes that it cannot run inside
    (see the module); whether it runs on D's connection objects for them."""
    __tracebackhide__ = True
    scopes = scopes_of(item.config)
    fixturenames: list[str] = getattr(item, "fixturenames", [])
    asks = sorted(DB_FIXTURES.intersection(fixturenames), key=lambda name: -_WIDTH[name[3:]])
    if any(level.db.stopped for level in scopes.levels):
        scopes.close_all()
    if transactional and asks:
        msg = (
            f"{item.nodeid} is a transactional test (transactional_db, live_server, or "
            f"django_db(transaction=True)) and uses {asks[0]} (through its fixtures), whose "
            "transaction it "
            "would commit in: give it fixtures of function scope, or use db instead of "
            "transactional_db."
        )
        pytest.fail(msg, pytrace=False)
    if transactional and scopes.levels:
        scopes.close_all()
    return bool(scopes.levels or asks)


@contextlib.contextmanager
def restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """M, around one test: the values of its scoped database fixtures are put back as
    they were when pytest made them, after the test (see ``_Snapshot``)."""
    scopes = scopes_of(request.config)
    snapshots = []
    for name in scopes.fixtures.intersection(request.fixturenames):
        value = request.getfixturevalue(name)  # set up already: a wider scope's
        kept = scopes.snapshots.get(name)
        if kept is None or kept[0] is not value:
            kept = scopes.snapshots[name] = (value, _Snapshot(value))
        snapshots.append(kept[1])
    try:
        yield
    finally:
        for snapshot in snapshots:
            snapshot.restore()


class _Snapshot:
    """What a fixture's value holds, to put back in place after each test: the items
    of its lists, dicts and sets, and the attributes of its model instances (their
    loaded fields, cached relations and state), through tuples and down to every such
    object they reach. Other objects (a client, a queryset) are shared as they are, as
    pytest shares any fixture's value.

    A test changes the objects and the rows of a scoped fixture at will: the rows are
    rolled back, and the objects put back, before the next test. Django deep-copies
    ``setUpTestData``'s attributes for each test instead; a deep copy of a hundred
    model instances costs about as much as making their rows, which a scoped fixture
    is there to save, and this costs about a hundredth of it.
    """

    def __init__(self, value: Any) -> None:
        self._saved: list[tuple[Any, Any]] = []
        self._seen: set[int] = set()
        self._walk(value)
        del self._seen

    def _walk(self, value: Any) -> None:
        kind = type(value)
        if kind in _ATOMS or id(value) in self._seen:
            return
        if kind is tuple:
            for item in value:
                self._walk(item)
            return
        if kind in (list, dict, set):
            self._seen.add(id(value))
            self._saved.append((value, kind(value)))
            for item in value.values() if kind is dict else value:
                self._walk(item)
            return
        from django.db.models import Model

        if isinstance(value, Model):
            self._seen.add(id(value))
            state = value._state
            self._saved.append((value, dict(value.__dict__)))
            self._saved.append((state, dict(state.__dict__)))
            self._walk(state.__dict__.get("fields_cache"))
            self._walk(value.__dict__.get("_prefetched_objects_cache"))

    def restore(self) -> None:
        for obj, saved in self._saved:
            kind = type(obj)
            if kind is list:
                obj[:] = saved
                continue
            contents = obj if kind in (dict, set) else obj.__dict__
            contents.clear()
            contents.update(saved)


_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})
