import json

import httpx
from django.contrib.auth.models import User
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from djasynctest import AsyncLiveServerTestCase
from orders.models import Item, Order

CSRF_SECRET = "live0server0test0csrf0secret0032"  # any 32 letters and digits


class LiveOrderTests(AsyncLiveServerTestCase):
    asgi_application = "shop.asgi.application"  # HTTP and WebSockets (channels)

    async def asyncSetUp(self):
        self.pen = await Item.objects.acreate(name="pen", price=2)
        self.user = await User.objects.acreate(username="alice")
        await self.async_client.aforce_login(self.user)
        # The session the test client logged in with, for real clients, and a CSRF
        # cookie with its header, as a browser sends them (the test client skips CSRF
        # checks; a live server does not).
        cookies = {name: morsel.value for name, morsel in self.async_client.cookies.items()}
        self.session_cookie = f"sessionid={cookies['sessionid']}"
        cookies["csrftoken"] = CSRF_SECRET
        self.http = httpx.AsyncClient(
            base_url=self.live_server_url,
            cookies=cookies,
            headers={"X-CSRFToken": CSRF_SECRET},
            verify=False,  # plain HTTP: spares loading the CA bundle (about 20 ms a client)
        )
        self.addAsyncCleanup(self.http.aclose)

    async def test_place_order_over_http(self):
        response = await self.http.post("/orders/", data={"item": self.pen.pk, "quantity": 2})
        self.assertEqual(response.status_code, 201)
        order = await Order.objects.aget(pk=response.json()["id"])  # the server's row, here
        self.assertEqual(order.quantity, 2)

    async def test_order_events_stream(self):
        async with self.http.stream("GET", "/orders/events/?limit=2") as response:
            self.assertEqual(response.headers["content-type"], "text/event-stream")
            events = response.aiter_lines()
            self.assertEqual(await anext(events), 'data: {"orders": 0}')
            await Order.objects.acreate(item=self.pen, user=self.user)  # made by the test
            self.assertEqual([line async for line in events if line], ['data: {"orders": 1}'])

    async def test_order_over_a_websocket(self):
        url = self.live_server_url.replace("http://", "ws://") + "/ws/orders/"
        async with connect(url, additional_headers={"Cookie": self.session_cookie}) as websocket:
            self.assertEqual(json.loads(await websocket.recv()), {"orders": 0})
            await websocket.send(json.dumps({"item": self.pen.pk}))
            self.assertEqual(json.loads(await websocket.recv()), {"orders": 1})
        # The consumer's order is in the test's transaction, rolled back after it.
        self.assertEqual(await Order.objects.filter(user=self.user).acount(), 1)

    async def test_anonymous_websocket_is_refused(self):
        url = self.live_server_url.replace("http://", "ws://") + "/ws/orders/"
        with self.assertRaises(InvalidStatus) as refused:
            async with connect(url):
                pass
        # Closed before it was accepted: the handshake fails, as ASGI servers do it.
        self.assertEqual(refused.exception.response.status_code, 403)
