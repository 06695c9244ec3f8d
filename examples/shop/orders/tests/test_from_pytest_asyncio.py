from django.contrib.auth.models import User

from djasynctest import AsyncTestCase
from orders.models import Item, Order


class OrderTests(AsyncTestCase):
    @classmethod
    async def setUpTestData(cls):
        # Was the pen fixture: made once for the class, each test gets its own copy.
        cls.pen = await Item.objects.acreate(name="pen", price=2)

    async def asyncSetUp(self):
        # Was the logged_in fixture, up to its yield.
        user = await User.objects.acreate(username="alice")
        await self.async_client.aforce_login(user)

    async def asyncTearDown(self):
        # Was the logged_in fixture, after its yield.
        await self.async_client.alogout()

    async def test_order(self):
        response = await self.async_client.post("/orders/", {"item": self.pen.pk})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(await Order.objects.acount(), 1)
