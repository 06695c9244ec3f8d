"""Records where the test database is, for tests/test_bootstrap.py to check after exit."""

import os
from pathlib import Path

from django.db import connection

from djasynctest import AsyncTestCase
from tests.testapp.models import Item


class RecordsDatabase(AsyncTestCase):
    async def test_record(self):
        await Item.objects.acreate(name="made")
        Path(os.environ["RECORD_TO"]).write_text(connection.settings_dict["NAME"])
        self.assertEqual(await Item.objects.acount(), 1)
