"""The libraries tests use: freezegun, time-machine, hypothesis, sync decorators."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from freezegun import freeze_time

from djasynctest import AsyncTestCase
from tests.testapp.models import Item
from tests.utils import assert_passed, leftover_rows, problems, run_case

FROZEN = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "freezer",
    [
        freeze_time(FROZEN),
        freeze_time(FROZEN, tick=True),
        freeze_time(FROZEN, real_asyncio=True),
        time_machine.travel(FROZEN, tick=False),
    ],
    ids=["freezegun", "freezegun tick", "freezegun real_asyncio", "time-machine"],
)
def test_timeout_and_blocking_detector_measure_real_time_under_frozen_time(
    freezer: Callable[[type], type],
) -> None:
    @freezer
    class Frozen(AsyncTestCase):
        timeout = 5

        async def test_frozen(self) -> None:
            await Item.objects.acreate(name="pen")
            self.assertEqual(dt.date.today(), FROZEN.date())

        def test_sync_frozen(self) -> None:
            self.assertEqual(dt.date.today(), FROZEN.date())

        async def test_blocks(self) -> None:
            time.sleep(0.3)

    result = run_case(Frozen)
    assert [case._testMethodName for case, _ in result.failures] == ["test_blocks"]
    held = re.search(r"LoopBlocked: The event loop was blocked for about (\S+) s", problems(result)[0])
    assert held is not None
    assert 0.25 <= float(held[1]) < 1  # real seconds, not the frozen clock's
    assert result.errors == []
    assert leftover_rows() == {"items": [], "orders": 0}


@pytest.mark.parametrize("real_asyncio", [False, True])
def test_timeout_of_a_frozen_test_that_hangs_shows_what_it_waits_for(real_asyncio: bool) -> None:
    @freeze_time(FROZEN, real_asyncio=real_asyncio)
    class Hangs(AsyncTestCase):
        timeout = 0.5

        async def test_waits_forever(self) -> None:
            await asyncio.Event().wait()

    # Under a frozen clock, a timer on the loop would never fire: this would hang.
    [text] = problems(run_case(Hangs))
    assert "TestTimeout: test_waits_forever" in text
    assert "did not finish within its timeout of 0.5 s" in text
    assert re.search(r"in test_waits_forever\n +await asyncio.Event\(\).wait\(\)", text), text
