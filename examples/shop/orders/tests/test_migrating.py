from django.contrib.auth.models import User
from django.core import mail
from django.test import TestCase

from djasynctest import AsyncTestCase
from orders.models import Item, Order


class Before(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.item = Item.objects.create(name="pen", price=2)

    def setUp(self):
        self.client.force_login(User.objects.create(username="alice"))

    def test_order(self):
        response = self.client.post("/orders/", {"item": self.item.pk})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(Order.objects.count(), 1)


class After(AsyncTestCase):
    @classmethod
    async def setUpTestData(cls):
        cls.item = await Item.objects.acreate(name="pen", price=2)

    async def setUp(self):
        user = await User.objects.acreate(username="alice", email="alice@example.com")
        await self.async_client.aforce_login(user)

    async def test_order(self):
        response = await self.async_client.post("/orders/", {"item": self.item.pk})
        self.assertEqual(response.status_code, 201)
        self.assertEqual(await Order.objects.acount(), 1)

    async def test_queries(self):
        async with self.assertNumQueries(2):
            await Item.objects.acreate(name="ink", price=5)
            await Item.objects.acount()
        await self.assertNumQueries(1, Item.objects.acount)

        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            await self.async_client.post("/orders/", {"item": self.item.pk})
        self.assertEqual(len(callbacks), 1)  # the order's confirmation mail
        self.assertEqual([message.to for message in mail.outbox], [["alice@example.com"]])

        self.assertQuerySetEqual(Item.objects.order_by("name"), ["ink", "pen"], transform=str)

        async with self.settings(LOGIN_URL="/sign-in/"):
            await self.async_client.alogout()
            response = await self.async_client.get("/orders/")
            self.assertRedirects(response, "/sign-in/?next=/orders/", fetch_redirect_response=False)
