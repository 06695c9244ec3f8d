"""A global async client, as an installed package ships one, for the loop scope tests."""

from __future__ import annotations

from pathlib import Path

# Like redis.asyncio's clients: made at import, it connects on first use, keeps a
# reader task on that loop, and is bound to it. With CLIENT_RECORD set, it appends
# "<process id> <name> connected" to that file when it connects, and "... closed"
# when its reader task ends (it is cancelled when the loop closes).
CLIENT_PACKAGE = """
import asyncio
import os

LOOPS = []


class Client:
    def __init__(self, name="client"):
        self.name = name
        self.connects = 0
        self.loop = None
        self.reader = None
        self._inbox = None

    async def ping(self):
        LOOPS.append(asyncio.get_running_loop())
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self._inbox = asyncio.Queue()
            self.reader = asyncio.create_task(self._read())
            self.connects += 1
            self._record("connected")
        reply = self.loop.create_future()
        self._inbox.put_nowait(reply)
        return await reply

    async def _read(self):
        try:
            async for reply in self._replies():
                reply.set_result("PONG")
        finally:
            # Cancelled when its loop closes.
            self._record("closed")

    async def _replies(self):
        while True:
            yield await self._inbox.get()

    def _record(self, event):
        if os.environ.get("CLIENT_RECORD"):
            with open(os.environ["CLIENT_RECORD"], "a") as record:
                record.write(f"{os.getpid()} {self.name} {event}\\n")


CLIENT = Client("global")
"""

# A URLconf with a view that uses the global client and the ORM.
CLIENT_URLS = """
from django.http import JsonResponse
from django.urls import path

from fakeclient import CLIENT
from tests.testapp.models import Item


async def ping(request):
    return JsonResponse({"pong": await CLIENT.ping(), "items": await Item.objects.acount()})


urlpatterns = [path("ping/", ping)]
"""


def install_client(folder: Path) -> tuple[Path, Path]:
    """Write ``fakeclient`` under ``folder``/site-packages (an installed package, as the
    leak report sees it) and ``clienturls`` in ``folder``: the two folders to import from."""
    installed = folder / "site-packages"
    installed.mkdir(exist_ok=True)
    (installed / "fakeclient.py").write_text(CLIENT_PACKAGE)
    (folder / "clienturls.py").write_text(CLIENT_URLS)
    return installed, folder


def assert_one_loop_per_process(record: Path, clients: set[str]) -> None:
    """Each process connected each client at most once, and closed every connection."""
    events = record.read_text().splitlines()
    assert len(events) == len(set(events)), events
    connected = {line.removesuffix(" connected") for line in events if line.endswith("connected")}
    closed = {line.removesuffix(" closed") for line in events if line.endswith("closed")}
    assert connected == closed, events
    assert {line.split(" ", 1)[1] for line in connected} == clients
