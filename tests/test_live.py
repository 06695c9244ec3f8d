"""AsyncLiveServerTestCase: a real server on the test's loop, in the test's transaction."""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import types
import unittest
from typing import Any, ClassVar

import httpx
import pytest
from django.contrib.auth.models import User

from djasynctest import AsyncLiveServerTestCase, _live
from tests.testapp.models import Item, Order
from tests.utils import assert_passed, leftover_rows, problems, run_case


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


def test_requests_see_the_tests_rows_and_everything_is_rolled_back() -> None:
    seen: list[Any] = []

    class Live(AsyncLiveServerTestCase):
        async def asyncSetUp(self) -> None:
            self.http = httpx.AsyncClient(verify=False, base_url=self.live_server_url)
            self.addAsyncCleanup(self.http.aclose)

        async def test_1_rows_both_ways(self) -> None:
            await Item.objects.acreate(name="made by the test")
            response = await self.http.get("/items/")
            seen.append(response.json())
            response = await self.http.post("/items/create/", data={"name": "made by a request"})
            self.assertEqual(response.status_code, 201)
            seen.append(sorted([item.name async for item in Item.objects.all()]))

        async def test_2_starts_clean(self) -> None:
            seen.append((await self.http.get("/items/")).json())
            seen.append(self.live_server_url)

    assert_passed(run_case(Live), 2)
    assert seen[:3] == [
        {"items": ["made by the test"]},
        ["made by a request", "made by the test"],
        {"items": []},
    ]
    assert seen[3].startswith("http://127.0.0.1:")
    assert _refused(seen[3]), "the server is stopped after its test"
    assert leftover_rows() == {"items": [], "orders": 0}


def test_logged_in_user_reaches_a_login_required_view() -> None:
    statuses: list[int] = []

    class LoggedIn(AsyncLiveServerTestCase):
        async def test_orders(self) -> None:
            user = await User.objects.acreate(username="alice")
            item = await Item.objects.acreate(name="pen")
            await self.async_client.aforce_login(user)
            cookies = {key: morsel.value for key, morsel in self.async_client.cookies.items()}
            async with httpx.AsyncClient(
                verify=False, base_url=self.live_server_url, cookies=cookies
            ) as http:
                statuses.append((await http.post("/orders/", data={"item": item.pk})).status_code)
            async with httpx.AsyncClient(verify=False, base_url=self.live_server_url) as anonymous:
                statuses.append((await anonymous.get("/orders/")).status_code)
            self.assertEqual(await Order.objects.filter(user=user).acount(), 1)

    assert_passed(run_case(LoggedIn), 1)
    assert statuses == [201, 302]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_server_sent_events_stream_sees_rows_made_while_it_runs() -> None:
    events: list[str] = []

    class Stream(AsyncLiveServerTestCase):
        async def test_stream(self) -> None:
            async with (
                httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http,
                http.stream("GET", "/items/events/?limit=2") as response,
            ):
                lines = response.aiter_lines()
                events.append(await anext(lines))
                await Item.objects.acreate(name="during the stream")
                async for line in lines:
                    if line:
                        events.append(line)

    assert_passed(run_case(Stream), 1)
    assert events == ["data: 0", "data: 1"]


def test_static_files_are_served() -> None:
    bodies: list[str] = []

    class Static(AsyncLiveServerTestCase):
        async def test_css(self) -> None:
            async with httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http:
                bodies.append((await http.get("/static/testapp/site.css")).text)

    assert_passed(run_case(Static), 1)
    assert bodies == ["body { color: teal; }\n"]


def test_class_loop_runs_one_server_for_the_class() -> None:
    urls: list[str] = []
    counts: list[int] = []

    class OneServer(AsyncLiveServerTestCase):
        loop_scope = "class"
        http: ClassVar[httpx.AsyncClient]

        @classmethod
        async def asyncSetUpClass(cls) -> None:
            cls.http = httpx.AsyncClient(verify=False, base_url=cls.live_server_url)
            urls.append(cls.live_server_url)

        @classmethod
        async def asyncTearDownClass(cls) -> None:
            await cls.http.aclose()

        async def test_1(self) -> None:
            urls.append(self.live_server_url)
            await Item.objects.acreate(name="one")
            counts.append(len((await self.http.get("/items/")).json()["items"]))

        async def test_2(self) -> None:
            urls.append(self.live_server_url)
            counts.append(len((await self.http.get("/items/")).json()["items"]))

    assert_passed(run_case(OneServer), 2)
    assert len(set(urls)) == 1
    assert counts == [1, 0]
    assert _refused(urls[0]), "the server is stopped after its class"
    assert leftover_rows() == {"items": [], "orders": 0}


def test_server_stops_cleanly_when_a_test_fails_or_times_out() -> None:
    urls: list[str] = []

    class Failing(AsyncLiveServerTestCase):
        timeout = 0.5

        async def test_1_fails_mid_stream(self) -> None:
            urls.append(self.live_server_url)
            http = httpx.AsyncClient(verify=False, base_url=self.live_server_url)
            self.addAsyncCleanup(http.aclose)
            async with http.stream("GET", "/items/events/?limit=5") as response:
                await anext(response.aiter_lines())
                raise AssertionError("failed while the server streams")

        async def test_2_times_out_mid_stream(self) -> None:
            urls.append(self.live_server_url)
            async with (
                httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http,
                http.stream("GET", "/items/events/?limit=5") as response,
            ):
                async for _ in response.aiter_lines():
                    pass

        async def test_3_next(self) -> None:
            async with httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http:
                self.assertEqual((await http.get("/items/")).json(), {"items": []})

    with warnings_as_errors():
        result = run_case(Failing)
    texts = problems(result)
    assert len(texts) == 2, texts
    assert "failed while the server streams" in texts[0]
    assert "TestTimeout" in texts[1]
    assert all(_refused(url) for url in urls)
    assert leftover_rows() == {"items": [], "orders": 0}


class warnings_as_errors:
    """Leaked tasks, threads and sockets (PendingTaskWarning, ResourceWarning) fail the test."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def test_missing_uvicorn_fails_the_class_and_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)

    class NoServer(AsyncLiveServerTestCase):
        async def test_never_runs(self) -> None:
            raise AssertionError("unreachable")

    result = run_case(NoServer)
    [(case, text)] = result.errors
    assert "setUpClass" in str(case)
    assert "pip install 'djasynctest[live]'" in text


def test_asyncio_tasks_of_requests_are_not_reported_as_leaks() -> None:
    class Quiet(AsyncLiveServerTestCase):
        async def test_request(self) -> None:
            async with httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http:
                await http.get("/items/")
            await asyncio.sleep(0)

    with warnings_as_errors():
        assert_passed(run_case(Quiet), 1)


@pytest.mark.parametrize("scope", ["test", "class", "module", "session"])
def test_live_server_case_is_an_async_test_case(scope: str) -> None:
    class Plain(AsyncLiveServerTestCase):
        loop_scope = scope  # type: ignore[assignment]

        async def test_it(self) -> None:
            self.assertTrue(self.live_server_url.startswith("http://127.0.0.1:"))

    assert isinstance(Plain("test_it"), unittest.IsolatedAsyncioTestCase)
    assert_passed(run_case(Plain), 1)


def test_connections_send_without_delay() -> None:
    """TCP_NODELAY on the server's connections: a kept-alive connection would otherwise
    wait out the client's delayed ACK (40 ms) on each response."""
    flags: list[int] = []

    class KeepAlive(AsyncLiveServerTestCase):
        async def test_it(self) -> None:
            async with httpx.AsyncClient(verify=False, base_url=self.live_server_url) as http:
                await http.get("/items/")
                server = self._djat_live_server
                assert server is not None
                for connection in server.state.connections:
                    sock = connection.transport.get_extra_info("socket")
                    flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    assert_passed(run_case(KeepAlive), 1)
    assert flags == [1]


def test_unknown_application_path_fails_the_class_with_the_cause() -> None:
    class Misnamed(AsyncLiveServerTestCase):
        asgi_application = "tests.asgi.no_such_application"

        async def test_never_runs(self) -> None:
            raise AssertionError("unreachable")

    [(case, text)] = run_case(Misnamed).errors
    assert "setUpClass" in str(case)
    assert 'Module "tests.asgi" does not define a "no_such_application" attribute' in text


def test_openssl_is_set_up_off_the_loop_before_the_first_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first SSL context of a process sets OpenSSL up (slow on a busy machine): the
    class makes one before its tests, off their loops (httpx makes one per client)."""
    made: list[tuple[str, bool]] = []

    def context(protocol: int) -> ssl.SSLContext:
        made.append((str(protocol), asyncio._get_running_loop() is not None))
        return ssl.SSLContext(protocol)

    monkeypatch.setattr(
        _live,
        "ssl",
        types.SimpleNamespace(SSLContext=context, PROTOCOL_TLS_CLIENT=ssl.PROTOCOL_TLS_CLIENT),
    )

    class Client(AsyncLiveServerTestCase):
        async def test_it(self) -> None:
            made.append(("the test", True))

    assert_passed(run_case(Client), 1)
    assert made == [(str(ssl.PROTOCOL_TLS_CLIENT), False), ("the test", True)]
