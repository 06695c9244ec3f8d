"""Users' code, type-checked by ``nox -s typing`` (mypy --strict): it must stay error-free.

Not a test module: it is never run, only checked.
"""

from __future__ import annotations

from typing import ClassVar

import httpx
from django.contrib.auth.models import User
from django.test import TestCase

from djasynctest import (
    AsyncLiveServerTestCase,
    AsyncTestCase,
    AsyncTestMixin,
    PendingTaskWarning,
)
from tests.testapp.models import Item, Order


class OrdersTests(AsyncTestCase):
    loop_scope = "class"
    blocking_threshold = 0.2
    timeout = 30.0
    fixtures = ["items.json"]
    item: Item

    # Type checkers hold an async override of a sync method against it: in typed
    # code, say so (or use asyncSetUp / asyncTearDown, as below).
    @classmethod
    async def setUpTestData(cls) -> None:  # type: ignore[override]
        cls.item = await Item.objects.acreate(name="pen", price=2)

    @classmethod
    async def asyncSetUpClass(cls) -> None:
        await Item.objects.acount()

    async def asyncSetUp(self) -> None:
        self.user = await User.objects.acreate(username="user")
        await self.async_client.aforce_login(self.user)

    async def tearDown(self) -> None:  # type: ignore[override]
        await self.async_client.alogout()

    async def test_order(self) -> None:
        response = await self.async_client.post("/orders/", {"item": self.item.pk})
        self.assertEqual(response.status_code, 201)
        async with self.assertNumQueries(1):
            self.assertEqual(await Order.objects.acount(), 1)
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            await Item.objects.acreate(name="ink")
        self.assertEqual(len(callbacks), 0)
        async with self.settings(DEBUG=True):
            self.assertRedirects(await self.async_client.get("/go/"), "/items/")

    def test_sync(self) -> None:
        self.assertEqual(Order.objects.count(), 0)


class Mixed(AsyncTestMixin, TestCase):
    async def test_it(self) -> None:
        self.assertQuerySetEqual(Item.objects.all(), [])
        self.assertTrue(issubclass(PendingTaskWarning, Warning))


class Live(AsyncLiveServerTestCase):
    loop_scope = "class"
    http: ClassVar[httpx.AsyncClient]

    @classmethod
    async def asyncSetUpClass(cls) -> None:
        cls.http = httpx.AsyncClient(verify=False, base_url=cls.live_server_url)

    async def test_items(self) -> None:
        response = await self.http.get("/items/")
        self.assertEqual(response.json(), {"items": []})
