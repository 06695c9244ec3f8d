"""django-async-backend's ORM in a user's tests, as each runner runs them
(tests/test_asyncbackend.py; DJASYNCTEST_DB=postgres-async-backend)."""

from django_async_backend.db.transaction import async_atomic

from djasynctest import AsyncTestCase
from tests.testapp.models import Item, Order


class AsyncOrmTests(AsyncTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.item = Item.objects.create(name="pen")

    async def test_1_writes(self):
        async with async_atomic():
            await Order(item_id=self.item.pk).async_save()
        self.assertEqual(await Order.objects.acount(), 1)
        self.assertEqual(await Item.async_objects.acount(), 1)

    async def test_2_rolled_back(self):
        self.assertEqual(await Order.async_objects.acount(), 0)
