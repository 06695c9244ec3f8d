import datetime as dt

import time_machine
from freezegun import freeze_time

from djasynctest import AsyncTestCase
from tests.testapp.models import Item

NEW_YEAR = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@freeze_time(NEW_YEAR)
class FreezegunTests(AsyncTestCase):
    timeout = 5  # measured in real time, whatever the frozen clock says

    async def setUp(self):
        # freezegun wraps setUp in a plain function: it still runs, on the loop.
        self.item = await Item.objects.acreate(name="calendar")

    async def test_today(self):
        self.assertEqual(dt.date.today(), NEW_YEAR.date())
        self.assertEqual(await Item.objects.acount(), 1)


@time_machine.travel(NEW_YEAR, tick=False)
class TimeMachineTests(AsyncTestCase):
    timeout = 5

    async def test_today(self):
        self.assertEqual(dt.date.today(), NEW_YEAR.date())
