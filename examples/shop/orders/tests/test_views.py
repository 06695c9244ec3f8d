import json

from django.contrib.auth.models import User
from django.core import mail

from djasynctest import AsyncTestCase
from orders.models import Item, Order


class ItemListTests(AsyncTestCase):
    fixtures = ["catalogue.json"]

    async def test_lists_items_from_fixture(self):
        response = await self.async_client.get("/items/")
        self.assertContains(response, "notebook: 4")
        self.assertContains(response, "pencil: 1")

    async def test_new_item_shows_up(self):
        await Item.objects.acreate(name="eraser", price=2)
        response = await self.async_client.get("/items/")
        self.assertContains(response, "eraser: 2")

    async def test_health_counts_items_of_this_test_only(self):
        response = await self.async_client.get("/health/")
        self.assertEqual(response.json(), {"status": "ok", "items": 2})


class OrderTests(AsyncTestCase):
    @classmethod
    async def setUpTestData(cls):
        cls.pen = await Item.objects.acreate(name="pen", price=2)

    async def setUp(self):
        self.user = await User.objects.acreate(username="alice", email="alice@example.com")
        await self.async_client.aforce_login(self.user)

    async def tearDown(self):
        await self.async_client.alogout()

    async def test_place_order(self):
        response = await self.async_client.post("/orders/", {"item": self.pen.pk, "quantity": 3})
        self.assertEqual(response.status_code, 201)
        order = await Order.objects.select_related("item").aget(pk=response.json()["id"])
        self.assertEqual((order.item.name, order.quantity), ("pen", 3))

    async def test_orders_start_empty_for_each_test(self):
        response = await self.async_client.get("/orders/")
        self.assertEqual(response.json(), {"orders": []})

    async def test_rolled_back_order_sends_no_mail(self):
        # on_commit callbacks never run inside a test's transaction.
        await self.async_client.post("/orders/", {"item": self.pen.pk})
        self.assertEqual(mail.outbox, [])

    async def test_unknown_item_is_404(self):
        response = await self.async_client.post("/orders/", {"item": 999})
        self.assertEqual(response.status_code, 404)

    async def test_anonymous_user_is_redirected_to_login(self):
        await self.async_client.alogout()
        response = await self.async_client.get("/orders/")
        self.assertRedirects(response, "/login/?next=/orders/", fetch_redirect_response=False)

    def test_sync_tests_work_too(self):
        Order.objects.create(item=self.pen, user=self.user)
        self.client.force_login(self.user)
        self.assertEqual(len(self.client.get("/orders/").json()["orders"]), 1)


class OrderEventsTests(AsyncTestCase):
    async def test_stream_reports_orders_made_while_it_runs(self):
        user = await User.objects.acreate(username="bob")
        item = await Item.objects.acreate(name="ink", price=5)
        response = await self.async_client.get("/orders/events/?limit=2")
        self.assertEqual(response["Content-Type"], "text/event-stream")
        events = aiter(response.streaming_content)
        self.addAsyncCleanup(events.aclose)  # as a server closes a stream it stops reading
        self.assertEqual(_event(await anext(events)), {"orders": 0})
        await Order.objects.acreate(item=item, user=user)
        self.assertEqual(_event(await anext(events)), {"orders": 1})


def _event(chunk):
    assert chunk.startswith(b"data: "), chunk
    assert chunk.endswith(b"\n\n"), chunk
    return json.loads(chunk[len(b"data: ") :])
