"""5,000 small async tests: tests/test_runners.py checks that resources stay flat.

Every 100th test of a process appends a sample to the file named by
SOAK_RECORD: the process, how many tests it has run, its threads, open file
descriptors, resident memory, and the connections PostgreSQL has open to its
test database.
"""

import os
import threading
from pathlib import Path

from django.db import connection

from djasynctest import AsyncTestCase
from djasynctest._dbthread import db_thread
from tests.testapp.models import Item

CLASSES = 50
TESTS_PER_CLASS = 100
_run = 0


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _server_connections() -> int:
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def _sample() -> None:
    global _run
    _run += 1
    if _run % 100:
        return
    sample = (
        os.getpid(),
        _run,
        threading.active_count(),
        len(os.listdir("/proc/self/fd")),
        _rss_kib(),
        db_thread().call(_server_connections),
    )
    with open(os.environ["SOAK_RECORD"], "a") as record:
        record.write(" ".join(map(str, sample)) + "\n")


async def _test(self):
    await Item.objects.acreate(name="soak")
    self.assertEqual(await Item.objects.acount(), 1)
    _sample()


for _number in range(CLASSES):
    _name = f"Soak{_number:02}"
    globals()[_name] = type(
        _name,
        (AsyncTestCase,),
        {"__module__": __name__, **{f"test_{i:03}": _test for i in range(TESTS_PER_CLASS)}},
    )
