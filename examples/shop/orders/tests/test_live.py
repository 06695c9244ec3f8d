import httpx
from django.contrib.auth.models import User

from djasynctest import AsyncLiveServerTestCase
from orders.models import Item, Order

CSRF_SECRET = "live0server0test0csrf0secret0032"  # any 32 letters and digits


class LiveOrderTests(AsyncLiveServerTestCase):
    async def asyncSetUp(self):
        self.pen = await Item.objects.acreate(name="pen", price=2)
        self.user = await User.objects.acreate(username="alice")
        await self.async_client.aforce_login(self.user)
        # The session the test client logged in with, for a real HTTP client, and a
        # CSRF cookie with its header, as a browser sends them (the test client skips
        # CSRF checks; a live server does not).
        cookies = {name: morsel.value for name, morsel in self.async_client.cookies.items()}
        cookies["csrftoken"] = CSRF_SECRET
        self.http = httpx.AsyncClient(
            base_url=self.live_server_url, cookies=cookies, headers={"X-CSRFToken": CSRF_SECRET}
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
