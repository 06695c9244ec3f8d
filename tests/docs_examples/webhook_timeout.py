import asyncio

from djasynctest import AsyncTestCase


class WebhookTests(AsyncTestCase):
    timeout = 10

    async def test_webhook_is_delivered(self):
        delivered = asyncio.Event()
        asyncio.get_running_loop().call_soon(delivered.set)  # stands for the provider's call
        await delivered.wait()
