"""django-async-backend's ORM in a user's tests, as each runner runs them
(tests/test_asyncbackend.py; DJASYNCTEST_DB=postgres-async-backend)."""

import asyncio

from django_async_backend.db import async_connections
from django_async_backend.db.transaction import async_atomic

from djasynctest import AsyncTestCase, AsyncTransactionTestCase
from tests.testapp.models import Item, Order


class AsyncOrmTests(AsyncTestCase):
    fixtures = ["items.json"]

    @classmethod
    def setUpTestData(cls):
        cls.item = Item.objects.create(name="pen")

    async def asyncSetUp(self):
        await Item.async_objects.acreate(name="set up")

    async def test_1_writes_in_the_tests_transaction(self):
        async with async_atomic():
            await Order(item_id=self.item.pk).async_save()
        self.assertEqual(await Order.objects.acount(), 1)
        self.assertEqual(await Item.async_objects.acount(), 3)

    async def test_2_rolled_back(self):
        self.assertEqual(await Order.async_objects.acount(), 0)

    async def test_3_savepoints_and_callbacks(self):
        try:
            async with async_atomic():
                await Item.async_objects.acreate(name="undone")
                raise ValueError
        except ValueError:
            pass
        async with self.captureOnCommitCallbacks() as callbacks, async_atomic():
            await async_connections["default"].on_commit(lambda: None)
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(await Item.objects.acount(), 3)

    async def test_4_queries_counted(self):
        with self.assertNumQueries(1):
            await Item.async_objects.acount()
        with self.captureQueries() as queries:
            await Item.async_objects.filter(name="pen").acount()
        self.assertIn("'pen'", queries.captured_queries[0]["sql"])

    async def test_5_tasks(self):
        await Item.async_objects.acount()
        with self.assertRaisesRegex(RuntimeError, "owned by another task"):
            await asyncio.gather(Item.async_objects.acount(), Item.async_objects.acount())

    async def test_6_requests(self):
        response = await self.async_client.get("/async-backend-items/")
        self.assertEqual(response.json(), {"items": ["fixture-ink", "pen", "set up"]})


class CommittedTests(AsyncTransactionTestCase):
    async def test_1_commits(self):
        async with async_atomic():
            await Item.async_objects.acreate(name="committed")
        self.assertEqual(await Item.objects.acount(), 1)

    async def test_2_flushed(self):
        self.assertEqual(await Item.async_objects.acount(), 0)
