from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic

from djasynctest import AsyncTestCase
from tests.testapp.models import Item, Order


class OrderTests(AsyncTestCase):
    @classmethod
    def setUpTestData(cls):
        # Django's ORM, sync: the async backend sees these rows.
        cls.item = Item.objects.create(name="pen")

    async def asyncSetUp(self):
        self.order = Order(item_id=self.item.pk)
        await self.order.async_save()

    async def test_cancel(self):
        notified = []
        async with async_atomic():  # a savepoint in the test's transaction
            await Order.async_objects.filter(pk=self.order.pk).adelete()
            await async_connections["default"].on_commit(lambda: notified.append(True))
        # Django's ORM sees what the async backend wrote, in the same transaction.
        self.assertEqual(await Order.objects.acount(), 0)
        # As in Django's TestCase, nothing commits: the callback waits.
        self.assertEqual(notified, [])
