"""The tests a user writes; every runner must give the same results."""

import threading

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from djasynctest import AsyncTestCase, AsyncTransactionTestCase
from tests.testapp.models import Item, Order


class OrdersTests(AsyncTestCase):
    fixtures = ["items.json"]

    @classmethod
    async def setUpTestData(cls):
        cls.item = await Item.objects.acreate(name="pen", price=2)

    async def setUp(self):
        self.user = await User.objects.acreate(username="user")
        await self.async_client.aforce_login(self.user)

    async def tearDown(self):
        await self.async_client.alogout()

    async def test_order(self):
        response = await self.async_client.post("/orders/", {"item": self.item.pk})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(await Order.objects.acount(), 1)

    async def test_order_fixture_item(self):
        response = await self.async_client.post("/orders/", {"item": 100})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(await Order.objects.acount(), 1)

    async def test_items(self):
        response = await self.async_client.get("/items/")
        self.assertEqual(response.json(), {"items": ["fixture-ink", "pen"]})

    def test_sync(self):
        self.assertIs(threading.current_thread(), threading.main_thread())
        self.assertEqual((Order.objects.count(), User.objects.count()), (0, 1))


def _make_isolation_test(number):
    async def test(self):
        await Item.objects.acreate(name="same-every-time")
        await sync_to_async(Item.objects.create)(name=f"via-sync-to-async-{number}")
        self.assertEqual(await Item.objects.acount(), 2)

    return test


class HundredTests(AsyncTestCase):
    locals().update({f"test_{n:03}": _make_isolation_test(n) for n in range(100)})


class FlushedTests(AsyncTransactionTestCase):
    async def test_1(self):
        await Item.objects.acreate(name="flushed")
        self.assertEqual(await Item.objects.acount(), 1)

    def test_2(self):
        self.assertEqual(Item.objects.filter(name="flushed").count(), 0)
