from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from djasynctest import AsyncTestCase
from tests.asgi import application
from tests.testapp.models import Item


class ItemsConsumerTests(AsyncTestCase):
    async def test_consumer_sees_the_tests_rows_and_user(self):
        await Item.objects.acreate(name="pen")
        await self.async_client.aforce_login(await User.objects.acreate(username="alice"))
        session = self.async_client.cookies["sessionid"].value
        communicator = WebsocketCommunicator(
            application, "/ws/items/", headers=[(b"cookie", f"sessionid={session}".encode())]
        )
        connected, _ = await communicator.connect()
        self.assertTrue(connected)
        self.assertEqual(await communicator.receive_json_from(), {"user": "alice", "items": 1})
        await communicator.send_json_to({"create": "ink"})
        self.assertEqual(await communicator.receive_json_from(), {"created": "ink", "items": 2})
        await communicator.disconnect()
        self.assertEqual(await Item.objects.acount(), 2)  # the consumer's row, rolled back after
