import asyncio

import hypothesis.extra.django
from hypothesis import given, settings
from hypothesis import strategies as st

from djasynctest import AsyncTestMixin
from tests.testapp.models import Item


class PriceTests(AsyncTestMixin, hypothesis.extra.django.TestCase):
    @settings(max_examples=20, deadline=None)
    @given(st.integers(min_value=0, max_value=10_000))
    async def test_price_round_trips(self, price):
        # Each example runs on the test's loop and is rolled back after it.
        item = await Item.objects.acreate(name="pen", price=price)
        self.assertEqual((await Item.objects.aget(pk=item.pk)).price, price)

    @settings(max_examples=20, deadline=None)
    @given(st.integers(min_value=0, max_value=10_000))
    def test_sync_example(self, price):
        Item.objects.create(name="pen", price=price)
        self.assertEqual(Item.objects.count(), 1)


class ExecutorTests(AsyncTestMixin, hypothesis.extra.django.TestCase):
    """Hypothesis's own pattern for async tests: a custom executor."""

    def execute_example(self, f):
        # A custom executor replaces setup_example and teardown_example, which
        # roll each example back: call them here.
        self.setup_example()
        try:
            result = f()
            return asyncio.run(result) if asyncio.iscoroutine(result) else result
        finally:
            self.teardown_example(None)

    @settings(max_examples=20, deadline=None)
    @given(st.integers(min_value=0, max_value=10_000))
    async def test_price_round_trips(self, price):
        await Item.objects.acreate(name="pen", price=price)
        self.assertEqual(await Item.objects.acount(), 1)
