import redis.asyncio as redis

from djasynctest import AsyncTestCase


class CacheTests(AsyncTestCase):
    loop_scope = "class"

    @classmethod
    async def asyncSetUpClass(cls):
        cls.redis = redis.Redis()
        await cls.redis.ping()

    @classmethod
    async def asyncTearDownClass(cls):
        await cls.redis.aclose()

    async def test_set(self):
        await self.redis.set("key", "value")

    async def test_get(self):
        self.assertIsNone(await self.redis.get("missing"))
