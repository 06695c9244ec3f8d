"""A channels WebSocket consumer that reaches the database both ways channels offers."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from tests.testapp.models import Item


class ItemsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4001)
            return
        await self.accept()
        await self.send_json({"user": user.username, "items": await Item.objects.acount()})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        item = await Item.objects.acreate(name=content["create"])
        count = await database_sync_to_async(Item.objects.count)()
        await self.send_json({"created": item.name, "items": count})
