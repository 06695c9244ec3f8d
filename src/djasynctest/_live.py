"""AsyncLiveServerTestCase: a real ASGI server on the test's own event loop.

Django's ``LiveServerTestCase`` serves from another thread, with another
database connection, so it must flush the database after every test. Here the
server (uvicorn's HTTP protocol, in-process) runs on the event loop of the test
(or of the class, with any other ``loop_scope``), in its context: each request
it serves is a task of that loop, whose thread-sensitive work (Django's ORM,
sessions, auth) goes to the DB thread like the test's own, inside the test's
transaction. Rows the test makes are seen by the requests, rows the requests
make are seen by the test, and all of them are rolled back after it.

The server is uvicorn's protocol on ``loop.create_server``, not
``uvicorn.Server``, whose main loop wakes every 0.1 s and whose shutdown sleeps
0.1 s: starting and stopping the server here costs well under a millisecond.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, ClassVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import modify_settings
from django.utils.module_loading import import_string

from djasynctest._case import AsyncTestCase

__unittest = True

# How long a request in flight at the end of a test may take to finish.
_SETTLE_GRACE = 1.0
# How long stop() waits for the connections to close once their requests are ended.
_STOP_TIMEOUT = 5.0


def _uvicorn() -> Any:
    try:
        import uvicorn
        import uvicorn.server
    except ImportError as exc:
        msg = (
            "AsyncLiveServerTestCase serves with uvicorn, which is not installed: "
            "pip install 'djasynctest[live]'."
        )
        raise ImproperlyConfigured(msg) from exc
    return uvicorn


def _listening_socket(host: str) -> socket.socket:
    # IPPROTO_TCP, not socket.create_server()'s 0: asyncio sets TCP_NODELAY only on
    # the connections of a socket made so, and without it a kept-alive connection
    # waits out the client's delayed ACK (40 ms) on every response.
    family, kind, proto, _, address = socket.getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class LiveServer:
    """An HTTP server for ``app`` on a free port of ``host``, on the running event loop."""

    def __init__(self, app: Any, host: str) -> None:
        uvicorn = _uvicorn()
        # log_config=None: leave the process's logging alone; no access log.
        self.config = uvicorn.Config(
            app, host=host, lifespan="off", log_config=None, access_log=False
        )
        self.config.load()
        self.state = uvicorn.server.ServerState()
        self.socket = _listening_socket(host)
        self.host = host
        self.port: int = self.socket.getsockname()[1]
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop it serves on
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config, state = self.config, self.state

        def protocol() -> asyncio.Protocol:
            # As uvicorn.Server.startup() makes its protocols.
            return config.http_protocol_class(  # type: ignore[no-any-return]
                config=config, server_state=state, app_state={}, _loop=loop
            )

        try:
            self._server = await loop.create_server(protocol, sock=self.socket)
        except BaseException:
            self.socket.close()
            raise
        self.loop = loop

    async def settle(self) -> None:
        """Let the requests in flight finish, within a grace; cancel those that do not.

        A client has its response before the server's task ends (Django still
        sends ``request_finished``); a stream the test stopped reading never
        ends. Either way no request may run on into the next test.
        """
        tasks = list(self.state.tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=_SETTLE_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def stop(self) -> None:
        """Stop listening, end the requests still served and close every connection."""
        server, self._server = self._server, None
        if server is None:
            self.socket.close()
            return
        server.close()
        for connection in list(self.state.connections):
            connection.shutdown()
        await self.settle()
        for connection in list(self.state.connections):
            connection.transport.close()
        await asyncio.wait_for(server.wait_closed(), _STOP_TIMEOUT)


def prepare_to_serve() -> None:
    """Before a live server's first test (M): uvicorn is there, and OpenSSL set up."""
    _uvicorn()  # a missing extra fails now, before any test
    # OpenSSL sets itself up with the first SSL context of the process, reading its
    # configuration: 0.1 s on a busy machine with a cold disk cache. Here, then, not on
    # the loop of the first test that makes an HTTP client (httpx makes a context even
    # with verify=False), where the blocking detector would rightly report it.
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def application(app: Any, *, serve_static: bool) -> Any:
    """The ASGI application a live server serves: ``app`` (or its dotted path; None:
    Django's own), with the static files of the finders when ``serve_static``."""
    if isinstance(app, str):
        app = import_string(app)
    if app is None:
        from django.core.asgi import get_asgi_application

        app = get_asgi_application()
    if serve_static and apps.is_installed("django.contrib.staticfiles"):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        app = ASGIStaticFilesHandler(app)
    return app


class AsyncLiveServerTestCase(AsyncTestCase):
    """:class:`AsyncTestCase` with a live ASGI server at ``self.live_server_url``.

    The server runs on the test's event loop (one per test) or, with any other
    ``loop_scope``, one per class on the loop the class runs on, from before
    ``asyncSetUpClass`` to after ``asyncTearDownClass``; its requests see the
    test's rows and are rolled back with them. Use an async client
    (``httpx.AsyncClient``, a browser driven through an async API): a blocking
    client would hold the very loop that serves it. Needs uvicorn
    (``pip install 'djasynctest[live]'``).
    """

    #: The interface the server listens on; its port is a free one.
    host: ClassVar[str] = "127.0.0.1"
    #: The ASGI application (or its dotted path); ``None``: Django's own,
    #: ``django.core.asgi.get_asgi_application()``.
    asgi_application: ClassVar[Any] = None
    #: Serve ``STATIC_URL`` from the static files finders, as ``StaticLiveServerTestCase``
    #: does, when ``django.contrib.staticfiles`` is installed.
    serve_static: ClassVar[bool] = True

    #: ``http://host:port`` of the server, from ``asyncSetUp`` (from ``asyncSetUpClass``
    #: with any ``loop_scope`` but ``"test"``) until the test's (the class's) end.
    live_server_url: str

    # The running server: on the class, unless loop_scope = "test"; else on the test.
    _djat_live_server: LiveServer | None = None
    _djat_application: ClassVar[Any]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        prepare_to_serve()
        cls.enterClassContext(modify_settings(ALLOWED_HOSTS={"append": cls.host}))
        # Once per class: Django loads its middleware each time it makes a handler.
        cls._djat_application = application(cls.asgi_application, serve_static=cls.serve_static)

    @classmethod
    async def _djat_class_started(cls) -> None:
        server = LiveServer(cls._djat_application, cls.host)
        await server.start()
        cls._djat_live_server = server
        cls.live_server_url = server.url

    @classmethod
    async def _djat_class_ending(cls) -> None:
        server = cls.__dict__.get("_djat_live_server")
        if server is not None:
            cls._djat_live_server = None
            await server.stop()

    def _djat_before_hooks(self) -> None:
        class_server = type(self).__dict__.get("_djat_live_server")
        if class_server is not None:
            # The class's server, on the class's loop: its requests end with the test.
            self.addCleanup(class_server.settle)
            return
        server = self._djat_live_server = LiveServer(self._djat_application, self.host)
        self._djat_call(server.start)
        self.live_server_url = server.url
        # Runs before the leak check: the server's own tasks are not the test's leaks.
        self.addCleanup(server.stop)
