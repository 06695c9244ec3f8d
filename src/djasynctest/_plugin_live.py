"""A live server for pytest tests: the ``async_live_server`` fixture.

What ``AsyncLiveServerTestCase`` serves, as it serves it (``_live.LiveServer``:
uvicorn's protocol, in-process): the project's ASGI application (the setting
``ASGI_APPLICATION``, as channels and runserver read it, else Django's own), with
the static files of the finders, its host in ``ALLOWED_HOSTS``, WebSocket as
uvicorn speaks it. It runs on an event loop of the tests: each request is a task of that loop,
whose database work goes to D, in the running test's transaction.

The server lives for the scope that the ini option
``djasynctest_live_server_scope`` names (``function``, the default: one per test;
``class``, ``module`` or ``session``), on the loop of that scope, and serves
whichever test runs then; a test must run on that loop (a ``loop_scope`` at
least as wide), else its requests would never be served, and it is refused.
pytest-django's ``live_server`` (a thread of its own, transactional tests) is
left as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

import pytest

from djasynctest._dbthread import db_thread
from djasynctest._routing import enter_routing, exit_routing

__unittest = True

HOST = "127.0.0.1"
SCOPES = ("function", "class", "module", "session")
SCOPE_INI = "djasynctest_live_server_scope"


Scope = Literal["session", "package", "module", "class", "function"]


def server_scope(fixture_name: str, config: pytest.Config) -> Scope:
    """The scope of the live server, from the ini option (see ``check_server_scope``)."""
    return cast("Scope", str(config.getini(SCOPE_INI)).strip() or "function")


def check_server_scope(config: pytest.Config) -> None:
    """At pytest_configure: a wrong scope stops pytest, with what it must be."""
    scope = server_scope("async_live_server", config)
    if scope not in SCOPES:
        msg = (
            f"The ini option {SCOPE_INI} is {scope!r}; it must be 'function' (a server for "
            "each test), 'class', 'module' or 'session' (one for the whole run)."
        )
        raise pytest.UsageError(msg)


@pytest.fixture(scope=server_scope, name="_djasynctest_live_server")
async def _djasynctest_live_server() -> AsyncIterator[Any]:
    """The server of the scope, on its loop."""
    from django.conf import settings
    from django.test.utils import modify_settings

    from djasynctest._live import LiveServer, application, prepare_to_serve

    prepare_to_serve()
    app = application(getattr(settings, "ASGI_APPLICATION", None), serve_static=True)
    server = LiveServer(app, HOST)
    allowed = modify_settings(ALLOWED_HOSTS={"append": HOST})
    allowed.enable()
    # The requests run in copies of this context: their thread-sensitive calls go to D,
    # also inside the ThreadSensitiveContext that Django's handler opens for each.
    routing = enter_routing(db_thread())
    try:
        await server.start()
        yield server
    finally:
        try:
            await server.stop()
        finally:
            exit_routing(routing)
            allowed.disable()


@pytest.fixture
async def async_live_server(
    db: None, _djasynctest_live_server: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """A live ASGI server on the test's event loop, serving in the test's transaction
    (it asks for ``db``; with ``transactional_db`` or ``django_db(transaction=True)``,
    the test's transaction is that): ``async_live_server.url`` is
    ``http://127.0.0.1:<port>``. Its requests in flight when
    the test ends finish (within a second) or are cancelled, before the rollback."""
    server = _djasynctest_live_server
    if server.loop is not asyncio.get_running_loop():
        scope = server_scope("async_live_server", request.config)
        msg = (
            f"async_live_server serves on the event loop of its scope ({scope}), and "
            f"{request.node.nodeid} runs on another, which would never serve its requests. "
            f"Give the test a loop_scope of {scope} or wider (djasynctest_loop_scope, or "
            "@pytest.mark.djasynctest(loop_scope=...); with pytest-asyncio, its loop_scope), "
            f"or set {SCOPE_INI} = function."
        )
        pytest.fail(msg, pytrace=False)
    yield server
    await server.settle()
