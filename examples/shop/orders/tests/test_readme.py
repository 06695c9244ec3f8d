from django.contrib.auth.models import User

from djasynctest import AsyncTestCase
from orders.models import Item, Order


class OrdersTests(AsyncTestCase):
    fixtures = ["catalogue.json"]

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
        self.assertEqual(await Order.objects.acount(), 1)  # gone after this test

    async def test_orders_start_empty(self):
        # The order made by the other test was rolled back.
        self.assertEqual(await Order.objects.acount(), 0)
