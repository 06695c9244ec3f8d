"""Ctrl-C in the middle of an async test: tests/test_bootstrap.py checks what is left."""

import asyncio
import os
import signal
from pathlib import Path

from django.db import connection

from djasynctest import AsyncTestCase
from tests.testapp.models import Item


class Interrupted(AsyncTestCase):
    loop_scope = os.environ.get("LOOP_SCOPE", "test")

    @classmethod
    def setUpTestData(cls):
        Item.objects.create(name="class data")

    async def test_1_interrupted(self):
        await Item.objects.acreate(name="made")
        Path(os.environ["RECORD_TO"]).write_text(connection.settings_dict["NAME"])
        # Twice: Django's runner (as unittest -c) only stops after the test on
        # the first Ctrl-C, and raises KeyboardInterrupt on the second.
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(60)

    async def test_2_never_runs(self):
        Path(os.environ["RECORD_TO"]).write_text("the run went on")
