"""The installed wheel, under plain unittest: Django set up, databases made, tests rolled back."""

import djasynctest  # noqa: F401, I001  (sets Django up before the models are imported)

from django.contrib.auth.models import User

from djasynctest import AsyncTestCase


class Smoke(AsyncTestCase):
    @classmethod
    async def setUpTestData(cls):
        cls.admin = await User.objects.acreate(username="admin")

    async def test_1_creates(self):
        await User.objects.acreate(username="user")
        self.assertEqual(await User.objects.acount(), 2)

    async def test_2_sees_only_the_class_data(self):
        self.assertEqual([user.username async for user in User.objects.all()], ["admin"])
