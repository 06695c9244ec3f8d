"""Event loops: one per test or one per class, loop_factory, and the options that choose them."""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util

import pytest
from django.test import override_settings

from djasynctest import AsyncTestCase
from tests.testapp.models import Item
from tests.utils import assert_passed, leftover_rows, problems, run_case, thread

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class FakeRedis:
    """Stands for a global async client: bound to the loop it was made on."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def ping(self) -> str:
        assert asyncio.get_running_loop() is self.loop, "used from another event loop"
        await self.queue.put("PONG")
        return await self.queue.get()


def test_test_scope_gives_each_test_a_new_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    class PerTest(AsyncTestCase):
        async def test_1(self) -> None:
            loops.append(asyncio.get_running_loop())

        async def test_2(self) -> None:
            loops.append(asyncio.get_running_loop())

    assert_passed(run_case(PerTest), 2)
    assert loops[0] is not loops[1]
    assert all(loop.is_closed() for loop in loops)


def test_class_scope_shares_one_loop_and_its_clients() -> None:
    events: list[object] = []

    class PerClass(AsyncTestCase):
        loop_scope = "class"

        @classmethod
        async def asyncSetUpClass(cls) -> None:
            events.append(("asyncSetUpClass", thread()))
            cls.redis = FakeRedis()
            request_id.set("from-class")
            cls.shared = await Item.objects.acreate(name="class-row")

        @classmethod
        async def asyncTearDownClass(cls) -> None:
            events.append(("asyncTearDownClass", await cls.redis.ping()))

        async def test_1(self) -> None:
            events.append((await self.redis.ping(), request_id.get()))
            request_id.set("from-test-1")
            await Item.objects.acreate(name="test-row")
            events.append(await Item.objects.acount())

        async def test_2(self) -> None:
            events.append((await self.redis.ping(), request_id.get()))
            events.append(await Item.objects.acount())

    assert_passed(run_case(PerClass), 2)
    assert events == [
        ("asyncSetUpClass", "main"),
        ("PONG", "from-class"),
        2,
        ("PONG", "from-class"),
        1,
        ("asyncTearDownClass", "PONG"),
    ]
    assert PerClass.redis.loop.is_closed()
    assert leftover_rows() == {"items": [], "orders": 0}


def test_class_scope_from_the_setting() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    class FromSetting(AsyncTestCase):
        async def test_1(self) -> None:
            loops.append(asyncio.get_running_loop())

        async def test_2(self) -> None:
            loops.append(asyncio.get_running_loop())

    with override_settings(DJASYNCTEST={"LOOP_SCOPE": "class"}):
        assert_passed(run_case(FromSetting), 2)
    assert loops[0] is loops[1]


def test_failing_async_set_up_class_rolls_back_and_closes_the_loop() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    class Failing(AsyncTestCase):
        loop_scope = "class"

        @classmethod
        def setUpTestData(cls) -> None:
            Item.objects.create(name="class-data")

        @classmethod
        async def asyncSetUpClass(cls) -> None:
            seen.append(asyncio.get_running_loop())
            await Item.objects.acreate(name="async-class-data")
            raise ValueError("client down")

        async def test_never_runs(self) -> None:
            raise AssertionError("unreachable")

    result = run_case(Failing)
    [(case, text)] = result.errors
    assert "setUpClass" in str(case)
    assert "ValueError: client down" in text
    assert seen[0].is_closed()
    assert leftover_rows() == {"items": [], "orders": 0}


def test_async_set_up_class_needs_class_scope() -> None:
    class NeedsClassLoop(AsyncTestCase):
        @classmethod
        async def asyncSetUpClass(cls) -> None:
            pass

        async def test_it(self) -> None:
            pass

    [text] = problems(run_case(NeedsClassLoop))
    name = "test_async_set_up_class_needs_class_scope.<locals>.NeedsClassLoop"
    assert (
        f"TypeError: {name}.asyncSetUpClass needs one event loop for the whole class: "
        f'set loop_scope = "class" on {name}.'
    ) in text


def test_bad_loop_scope_fails_at_class_creation() -> None:
    with pytest.raises(TypeError) as info:

        class Module(AsyncTestCase):
            loop_scope = "module"

    assert str(info.value) == (
        "test_bad_loop_scope_fails_at_class_creation.<locals>.Module.loop_scope is "
        "'module'; it must be 'test' (a new event loop for each test) or 'class' "
        "(one for the whole class)."
    )


def test_misspelt_option_fails_at_class_creation() -> None:
    with pytest.raises(TypeError) as info:

        class Typo(AsyncTestCase):
            loop_scop = "class"

    assert str(info.value) == (
        "test_misspelt_option_fails_at_class_creation.<locals>.Typo.loop_scop is not a "
        "djasynctest option; did you mean loop_scope?"
    )


def test_unknown_setting_key_is_an_error() -> None:
    class Case(AsyncTestCase):
        async def test_it(self) -> None:
            pass

    with override_settings(DJASYNCTEST={"LOOP_SCOOP": "class"}):
        [text] = problems(run_case(Case))
    assert "TypeError: settings.DJASYNCTEST has unknown keys ['LOOP_SCOOP']" in text


@pytest.mark.parametrize("scope", ["test", "class"])
def test_loop_factory_makes_every_loop(scope: str) -> None:
    made: list[asyncio.AbstractEventLoop] = []

    def factory() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        made.append(loop)
        return loop

    used: list[asyncio.AbstractEventLoop] = []

    class Factory(AsyncTestCase):
        loop_factory = staticmethod(factory)
        loop_scope = scope  # type: ignore[assignment]

        async def test_1(self) -> None:
            used.append(asyncio.get_running_loop())

        async def test_2(self) -> None:
            used.append(asyncio.get_running_loop())

    assert_passed(run_case(Factory), 2)
    assert len(used) == 2
    assert all(loop in made for loop in used)
    assert (used[0] is used[1]) == (scope == "class")


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
def test_uvloop() -> None:
    import uvloop

    kinds: list[str] = []

    class OnUvloop(AsyncTestCase):
        loop_factory = staticmethod(uvloop.new_event_loop)

        async def test_it(self) -> None:
            kinds.append(type(asyncio.get_running_loop()).__module__)
            await Item.objects.acreate(name="uv")
            response = await self.async_client.get("/items/")
            self.assertEqual(response.json(), {"items": ["uv"]})

    assert_passed(run_case(OnUvloop), 1)
    assert kinds == ["uvloop"]
