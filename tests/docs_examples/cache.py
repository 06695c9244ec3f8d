# One client for the whole process, made at import.
import os

import redis.asyncio as redis

client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))


async def add_to_cart(cart_id, item, quantity=1):
    return await client.hincrby(f"cart:{cart_id}", item, quantity)
