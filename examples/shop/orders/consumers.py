from channels.generic.websocket import AsyncJsonWebsocketConsumer

from orders.models import Item, Order


class OrderConsumer(AsyncJsonWebsocketConsumer):
    """Places orders over a WebSocket for the logged-in user, and counts them."""

    async def connect(self):
        self.user = self.scope["user"]
        if not self.user.is_authenticated:
            await self.close()  # before accept(): the handshake is refused (HTTP 403)
            return
        await self.accept()
        await self.send_json({"orders": await self._count()})

    async def receive_json(self, content):
        item = await Item.objects.aget(pk=content["item"])
        await Order.objects.acreate(item=item, user=self.user)
        await self.send_json({"orders": await self._count()})

    async def _count(self):
        return await Order.objects.filter(user=self.user).acount()
