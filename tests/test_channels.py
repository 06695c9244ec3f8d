"""channels consumers in the test's transaction: through WebsocketCommunicator and for real."""

from __future__ import annotations

from typing import Any

from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from websockets.asyncio.client import connect

from djasynctest import AsyncLiveServerTestCase, AsyncTestCase
from tests.asgi import application
from tests.testapp.models import Item
from tests.utils import assert_passed, leftover_rows, run_case


async def _logged_in_cookie(case: AsyncTestCase) -> str:
    user = await User.objects.acreate(username="alice")
    await case.async_client.aforce_login(user)
    return f"sessionid={case.async_client.cookies['sessionid'].value}"


def test_communicator_consumer_sees_the_tests_rows_and_user() -> None:
    messages: list[Any] = []

    class Consumer(AsyncTestCase):
        async def test_1_both_ways(self) -> None:
            await Item.objects.acreate(name="made by the test")
            cookie = await _logged_in_cookie(self)
            communicator = WebsocketCommunicator(
                application, "/ws/items/", headers=[(b"cookie", cookie.encode())]
            )
            connected, _ = await communicator.connect()
            self.assertTrue(connected)
            messages.append(await communicator.receive_json_from())
            await communicator.send_json_to({"create": "made by the consumer"})
            messages.append(await communicator.receive_json_from())
            await communicator.disconnect()
            messages.append(await Item.objects.acount())

        async def test_2_anonymous_is_refused_and_rows_are_gone(self) -> None:
            communicator = WebsocketCommunicator(application, "/ws/items/")
            connected, code = await communicator.connect()
            await communicator.disconnect()  # ends the application's task
            messages.append((connected, code, await Item.objects.acount()))

    assert_passed(run_case(Consumer), 2)
    assert messages == [
        {"user": "alice", "items": 1},
        {"created": "made by the consumer", "items": 2},
        2,
        (False, 4001, 0),
    ]
    assert leftover_rows() == {"items": [], "orders": 0}


def test_real_websocket_to_the_live_server_sees_the_tests_rows_and_user() -> None:
    messages: list[Any] = []

    class Live(AsyncLiveServerTestCase):
        asgi_application = "tests.asgi.application"

        async def test_websocket(self) -> None:
            await Item.objects.acreate(name="made by the test")
            cookie = await _logged_in_cookie(self)
            url = self.live_server_url.replace("http://", "ws://") + "/ws/items/"
            async with connect(url, additional_headers={"Cookie": cookie}) as websocket:
                messages.append(await websocket.recv())
                await websocket.send('{"create": "made over the wire"}')
                messages.append(await websocket.recv())
            messages.append(await Item.objects.acount())

    assert_passed(run_case(Live), 1)
    assert messages == [
        '{"user": "alice", "items": 1}',
        '{"created": "made over the wire", "items": 2}',
        2,
    ]
    assert leftover_rows() == {"items": [], "orders": 0}
