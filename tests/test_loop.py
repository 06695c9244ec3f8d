"""Event loops: per test, class, module or session; loop_factory; the options that choose them."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.test import override_settings

from djasynctest import AsyncTestCase, PendingTaskWarning, at_loop_close
from djasynctest._loop import close_shared_loops
from tests.clientlib import install_client
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


def test_async_set_up_class_with_a_loop_per_test_fails_naming_the_longer_scopes() -> None:
    class NeedsClassLoop(AsyncTestCase):
        @classmethod
        async def asyncSetUpClass(cls) -> None:
            pass

        async def test_it(self) -> None:
            pass

    [text] = problems(run_case(NeedsClassLoop))
    name = (
        "test_async_set_up_class_with_a_loop_per_test_fails_naming_the_longer_scopes"
        ".<locals>.NeedsClassLoop"
    )
    assert text.endswith(
        f"TypeError: {name}.asyncSetUpClass needs an event loop that lasts the whole class: "
        f'set loop_scope = "class" on {name}, or "session" (or "module") to share one loop '
        "with other classes, as a client kept between classes needs.\n"
    )


def test_bad_loop_scope_fails_at_class_creation() -> None:
    with pytest.raises(TypeError) as info:

        class Package(AsyncTestCase):
            loop_scope = "package"  # type: ignore[assignment]

    assert str(info.value) == (
        "test_bad_loop_scope_fails_at_class_creation.<locals>.Package.loop_scope is "
        "'package'; it must be 'test' (a new event loop for each test), 'class' (one for "
        "each class), 'module' (one for each test module) or 'session' (one for the whole run)."
    )


def test_misspelt_option_fails_at_class_creation() -> None:
    with pytest.raises(TypeError) as info:

        class Typo(AsyncTestCase):
            loop_scop = "class"

    assert str(info.value) == (
        "test_misspelt_option_fails_at_class_creation.<locals>.Typo.loop_scop is not a "
        "djasynctest option; did you mean loop_scope?"
    )


KEYS = (
    "['BLOCKING_ALLOWED', 'BLOCKING_MODE', 'BLOCKING_THRESHOLD', 'CPU_AFFINITY', "
    "'LEAK_CHECKS', 'LOOP_DEBUG', 'LOOP_FACTORY', 'LOOP_SCOPE', 'TASK_CREATION_STACKS', "
    "'TIMEOUT']"
)


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        (
            {"LOOP_SCOOP": "class"},
            "settings.DJASYNCTEST has unknown keys ['LOOP_SCOOP']; did you mean 'LOOP_SCOPE'? "
            f"the keys are {KEYS}.",
        ),
        (
            {"loop_scope": "class", "TIMOUT": 5, "COLOUR": "blue"},
            "settings.DJASYNCTEST has unknown keys ['COLOUR', 'TIMOUT', 'loop_scope']; did you "
            f"mean 'TIMEOUT' for 'TIMOUT', 'LOOP_SCOPE' for 'loop_scope'? the keys are {KEYS}.",
        ),
        (
            {"COLOUR": "blue"},
            f"settings.DJASYNCTEST has unknown keys ['COLOUR']; the keys are {KEYS}.",
        ),
        (
            "session",
            "settings.DJASYNCTEST is 'session'; it must be a dict of options, such as "
            'DJASYNCTEST = {"LOOP_SCOPE": "session", "TIMEOUT": 30}.',
        ),
    ],
)
def test_a_wrong_setting_is_an_error_that_names_the_fix(setting: object, error: str) -> None:
    class Case(AsyncTestCase):
        async def test_it(self) -> None:
            pass

    with override_settings(DJASYNCTEST=setting):
        [text] = problems(run_case(Case))
    assert text == f"TypeError: {error}\n"


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


# --- Loops that outlive a class: "module" and "session" -----------------------------


def in_module(case: type[AsyncTestCase], module: str) -> type[AsyncTestCase]:
    """``case`` as if defined in the test module ``module``."""
    case.__module__ = module
    return case


@pytest.fixture
def client_package(tmp_path: Path) -> Iterator[ModuleType]:
    folders = [str(folder) for folder in install_client(tmp_path)]
    sys.path[:0] = folders
    try:
        yield importlib.import_module("fakeclient")
    finally:
        sys.path[:] = [path for path in sys.path if path not in folders]
        for name in ("fakeclient", "clienturls"):
            sys.modules.pop(name, None)


def test_session_scope_one_loop_for_every_class_of_every_module(client_package: Any) -> None:
    client = client_package.CLIENT
    loops: list[asyncio.AbstractEventLoop] = []

    def case(module: str) -> type[AsyncTestCase]:
        class UsesTheClient(AsyncTestCase):
            loop_scope = "session"

            async def test_client_view_and_orm(self) -> None:
                loops.append(asyncio.get_running_loop())
                self.assertEqual(await client.ping(), "PONG")
                await Item.objects.acreate(name=module)
                response = await self.async_client.get("/ping/")
                self.assertEqual(response.json(), {"pong": "PONG", "items": 1})

            def test_sync(self) -> None:
                self.assertEqual(Item.objects.count(), 0)

        return in_module(UsesTheClient, module)

    with override_settings(ROOT_URLCONF="clienturls"):
        for module in ("tests.fake_a", "tests.fake_a", "tests.fake_b"):
            # -W error: a report of the client's reader task as a leak would fail it.
            assert_passed(run_case(case(module)), 2)
    assert client.connects == 1
    assert loops[0] is loops[1] is loops[2]
    assert not loops[0].is_closed()
    assert leftover_rows() == {"items": [], "orders": 0}
    reader = client.reader
    close_shared_loops()
    assert loops[0].is_closed()
    assert reader.cancelled()


def test_session_scope_from_the_setting_and_async_class_hooks(client_package: Any) -> None:
    events: list[object] = []

    class First(AsyncTestCase):
        redis: Any

        @classmethod
        async def asyncSetUpClass(cls) -> None:
            cls.redis = client_package.Client()  # made on the session's loop
            events.append(await cls.redis.ping())

        async def test_it(self) -> None:
            events.append(await self.redis.ping())

    class Second(AsyncTestCase):
        async def test_uses_the_first_classs_client(self) -> None:
            events.append(await First.redis.ping())

    with override_settings(DJASYNCTEST={"LOOP_SCOPE": "session"}):
        assert_passed(run_case(in_module(First, "tests.fake_a")), 1)
        assert_passed(run_case(in_module(Second, "tests.fake_b")), 1)
    assert events == ["PONG", "PONG", "PONG"]
    assert First.redis.connects == 1


def test_module_scope_one_loop_per_module_closed_when_the_next_module_starts() -> None:
    loops: dict[str, asyncio.AbstractEventLoop] = {}

    def case(name: str, module: str) -> type[AsyncTestCase]:
        class OneModule(AsyncTestCase):
            loop_scope = "module"

            async def test_1(self) -> None:
                loops[name + ".1"] = asyncio.get_running_loop()

            async def test_2(self) -> None:
                loops[name + ".2"] = asyncio.get_running_loop()

        return in_module(OneModule, module)

    assert_passed(run_case(case("a", "tests.fake_a")), 2)
    assert_passed(run_case(case("a2", "tests.fake_a")), 2)
    assert loops["a.1"] is loops["a.2"] is loops["a2.1"]
    assert not loops["a.1"].is_closed()
    assert_passed(run_case(case("b", "tests.fake_b")), 2)
    assert loops["b.1"] is loops["b.2"]
    assert loops["b.1"] is not loops["a.1"]
    assert loops["a.1"].is_closed()
    assert not loops["b.1"].is_closed()


@pytest.mark.parametrize("scope", ["test", "class", "module"])
def test_an_object_bound_to_a_loop_that_is_gone_names_the_fix(scope: str) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    def case(module: str) -> type[AsyncTestCase]:
        class UsesTheQueue(AsyncTestCase):
            loop_scope = scope  # type: ignore[assignment]

            async def test_it(self) -> None:
                # An empty queue's get() binds the queue to the loop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.get(), 0.001)

        return in_module(UsesTheQueue, module)

    assert_passed(run_case(case("tests.fake_a")), 1)
    [text] = problems(run_case(case("tests.fake_b")))
    assert "is bound to a different event loop" in text
    lifetime = {"test": "each test", "class": "each test class", "module": "each test module"}
    assert (
        f'djasynctest: an object bound to another event loop was used here: with loop_scope = "'
        f'{scope}", {lifetime[scope]} has a loop of its own, so an object kept from an earlier '
        "one (a global async client, a lock, a queue) is bound to a loop that is gone. Set "
        'loop_scope = "session" (on the class, with @pytest.mark.djasynctest(loop_scope='
        '"session"), or DJASYNCTEST = {"LOOP_SCOPE": "session"} in settings) to run every test '
        "on one loop, or make the object anew on each loop."
    ) in text


def test_the_same_object_works_in_every_class_with_the_session_scope() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    class UsesTheQueue(AsyncTestCase):
        loop_scope = "session"

        async def test_it(self) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.get(), 0.001)

    assert_passed(run_case(in_module(UsesTheQueue, "tests.fake_a")), 1)
    assert_passed(run_case(in_module(UsesTheQueue, "tests.fake_b")), 1)


def test_tasks_the_projects_code_leaves_on_a_shared_loop_are_the_tests() -> None:
    """Reported once, by the test that left them; not again by the tests after it."""

    class Leaky(AsyncTestCase):
        loop_scope = "session"

        async def test_1_leaves_a_task(self) -> None:
            self.task = asyncio.create_task(asyncio.Event().wait(), name="left")

        async def test_2_clean(self) -> None:
            await asyncio.sleep(0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_passed(run_case(Leaky), 2)
    [warning] = caught
    assert warning.category is PendingTaskWarning
    assert "test_1_leaves_a_task" in str(warning.message)
    assert "task left (" in str(warning.message)


def test_tasks_an_installed_package_leaves_are_the_tests_with_a_loop_per_test(
    client_package: Any,
) -> None:
    """With a loop per test, nothing outlives the test: the client's reader task is a leak."""

    class PerTest(AsyncTestCase):
        async def test_it(self) -> None:
            await client_package.Client().ping()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_passed(run_case(PerTest), 1)
    [warning] = caught
    assert warning.category is PendingTaskWarning
    assert re.search(r"created at .*fakeclient\.py:\d+, in ping\n", str(warning.message))


def counting_loop() -> asyncio.AbstractEventLoop:
    """A loop factory named in settings by its dotted path."""
    loop = asyncio.new_event_loop()
    counting_loop.made.append(loop)  # type: ignore[attr-defined]
    return loop


counting_loop.made = []  # type: ignore[attr-defined]


def test_loop_factory_from_the_setting_makes_the_session_loop() -> None:
    used: list[asyncio.AbstractEventLoop] = []

    class Factory(AsyncTestCase):
        async def test_1(self) -> None:
            used.append(asyncio.get_running_loop())

        async def test_2(self) -> None:
            used.append(asyncio.get_running_loop())

    counting_loop.made.clear()  # type: ignore[attr-defined]
    setting = {"LOOP_SCOPE": "session", "LOOP_FACTORY": "tests.test_loop.counting_loop"}
    with override_settings(DJASYNCTEST=setting):
        assert_passed(run_case(Factory), 2)
        assert_passed(run_case(in_module(Factory, "tests.fake_b")), 2)
    assert used[0] is used[1] is used[2] is used[3]
    assert counting_loop.made == [used[0]]  # type: ignore[attr-defined]


def test_bad_loop_factory_names_the_fix() -> None:
    class Case(AsyncTestCase):
        async def test_it(self) -> None:
            pass

    with override_settings(DJASYNCTEST={"LOOP_FACTORY": "tests.test_loop.no_such_factory"}):
        [text] = problems(run_case(Case))
    assert (
        "TypeError: settings.DJASYNCTEST['LOOP_FACTORY'] is 'tests.test_loop.no_such_factory'; "
        "it must be a callable that makes an event loop, or the dotted path of one."
    ) in text
    with pytest.raises(TypeError) as info:

        class NotCallable(AsyncTestCase):
            loop_factory = "uvloop"  # type: ignore[assignment]

    assert str(info.value) == (
        "test_bad_loop_factory_names_the_fix.<locals>.NotCallable.loop_factory is 'uvloop'; "
        "it must be a callable that makes an event loop, or the dotted path of one."
    )


@pytest.mark.parametrize("scope", ["test", "class", "session"])
def test_at_loop_close_runs_on_the_loop_just_before_it_closes(scope: str) -> None:
    events: list[object] = []

    class Closing(AsyncTestCase):
        loop_scope = scope  # type: ignore[assignment]

        async def test_1(self) -> None:
            loop = asyncio.get_running_loop()

            async def close_client() -> None:
                events.append(("async", asyncio.get_running_loop() is loop, loop.is_closed()))

            def close_sync() -> None:
                events.append("sync")

            at_loop_close(close_client)
            at_loop_close(close_sync)
            at_loop_close(close_client)  # once, however often given

        async def test_2(self) -> None:
            events.append("test_2")

    assert_passed(run_case(Closing), 2)
    closed = ["sync", ("async", True, False)]
    if scope == "test":
        assert events == [*closed, "test_2"]
    elif scope == "class":
        assert events == ["test_2", *closed]
    else:
        assert events == ["test_2"]
        close_shared_loops()
        assert events == ["test_2", *closed]


def test_at_loop_close_outside_a_test_loop_names_the_fix() -> None:
    with pytest.raises(RuntimeError) as info:
        at_loop_close(lambda: None)
    assert str(info.value) == (
        "at_loop_close() registers a callback for the event loop of a djasynctest test: "
        "call it from an async test, hook or fixture that djasynctest runs."
    )


def test_at_loop_close_of_something_not_callable_names_it() -> None:
    with pytest.raises(TypeError) as info:
        at_loop_close("not callable")  # type: ignore[arg-type]
    assert str(info.value) == (
        "at_loop_close() was given 'not callable'; it must be a callable (a coroutine function "
        "or a plain one) that the loop calls before it closes, such as client.aclose."
    )


def test_at_loop_close_of_a_coroutine_names_it_and_closes_it() -> None:
    """at_loop_close(client.aclose()): one error, and no "never awaited" warning after it."""

    async def aclose() -> None:
        pass

    coroutine = aclose()
    with pytest.raises(TypeError) as info:
        at_loop_close(coroutine)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"at_loop_close() was given {coroutine!r}; it must be a callable (a coroutine "
        "function or a plain one) that the loop calls before it closes, such as client.aclose."
    )
    assert coroutine.cr_frame is None  # closed: it was never started


def test_a_test_run_inside_another_leaves_the_outer_modules_loop_open() -> None:
    """Django's own suite runs test cases from inside its tests: one of another module
    must not close the loop the outer class still runs on."""
    loops: list[asyncio.AbstractEventLoop] = []

    class Inner(AsyncTestCase):
        loop_scope = "module"

        async def test_inner(self) -> None:
            loops.append(asyncio.get_running_loop())

    class Outer(AsyncTestCase):
        loop_scope = "module"

        async def test_1(self) -> None:
            loops.append(asyncio.get_running_loop())

        def test_2_runs_another_modules_test(self) -> None:
            assert_passed(run_case(in_module(Inner, "tests.fake_b")), 1)

        async def test_3(self) -> None:
            loops.append(asyncio.get_running_loop())

    assert_passed(run_case(in_module(Outer, "tests.fake_a")), 3)
    outer, inner, again = loops
    assert outer is again
    assert inner is not outer
    assert not outer.is_closed()
    close_shared_loops()  # the end of the run
    assert outer.is_closed()
    assert inner.is_closed()


def test_a_test_whose_code_is_all_sync_makes_no_loop_until_async_code_turns_up() -> None:
    made: list[asyncio.AbstractEventLoop] = []
    events: list[object] = []

    def factory() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        made.append(loop)
        return loop

    class Mixed(AsyncTestCase):
        loop_factory = staticmethod(factory)

        def setUp(self) -> None:
            Item.objects.create(name="sync")

        def test_1_sync(self) -> None:
            events.append(("sync", Item.objects.count()))

        def test_2_sync_with_an_async_cleanup(self) -> None:
            async def cleanup() -> None:
                events.append(("async cleanup", await Item.objects.acount()))
                asyncio.get_running_loop().create_task(asyncio.sleep(10), name="left")

            self.addAsyncCleanup(cleanup)

        async def test_3_async(self) -> None:
            events.append(("async", await Item.objects.acount()))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_passed(run_case(Mixed), 3)
    # One loop for the async cleanup, one for the async test; setUpClass, with no
    # async setUpTestData, needs none.
    assert len(made) == 2
    assert events == [("sync", 1), ("async cleanup", 1), ("async", 1)]
    # The loop made for the cleanup watched its tasks.
    [warning] = caught
    assert "task left (" in str(warning.message)
    assert leftover_rows() == {"items": [], "orders": 0}


def test_a_failing_at_loop_close_callback_is_reported_and_the_loop_still_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []
    loops: list[asyncio.AbstractEventLoop] = []

    class Closing(AsyncTestCase):
        async def test_it(self) -> None:
            loops.append(asyncio.get_running_loop())

            async def fails() -> None:
                raise ValueError("connection already gone")

            at_loop_close(lambda: closed.append("first registered"))
            at_loop_close(fails)

    with caplog.at_level("ERROR", logger="asyncio"):
        assert_passed(run_case(Closing), 1)
    assert closed == ["first registered"]
    assert loops[0].is_closed()
    [record] = caplog.records
    assert record.getMessage().startswith("at_loop_close callback <function ")
    assert "failed" in record.getMessage()
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "connection already gone"


def test_shared_loop_whose_default_executor_ran_closes_cleanly_at_exit() -> None:
    """At exit, Python 3.12 starts no thread: the loop's executor is not joined from one."""
    script = (
        "import asyncio, djasynctest._loop as L\n"
        "loop = L.shared_loop('session', 'm', debug=False, loop_factory=None)\n"
        "async def use_the_executor():\n"
        "    return await asyncio.get_running_loop().run_in_executor(None, str, 1)\n"
        "print(loop.run(use_the_executor(), __import__('contextvars').copy_context()))\n"
    )
    process = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        check=False,
    )
    assert (process.returncode, process.stdout, process.stderr) == (0, "1\n", "")


def test_a_tests_loop_is_closed_with_what_it_left_shut_down() -> None:
    """A loop per test closes at once when nothing is left on it; what is left (an async
    generator part-way, the default executor's threads, a task) is shut down first."""
    seen: dict[str, Any] = {}

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            seen["generator closed on its loop"] = asyncio.get_running_loop() is seen["loop"]

    class Leaves(AsyncTestCase):
        leak_checks = ()

        async def test_1_nothing(self) -> None:
            seen["first loop"] = asyncio.get_running_loop()

        async def test_2_generator_executor_and_task(self) -> None:
            loop = seen["loop"] = asyncio.get_running_loop()
            seen["generator"] = numbers()
            await anext(seen["generator"])
            await loop.run_in_executor(None, str)
            seen["task"] = loop.create_task(asyncio.Event().wait())

    assert_passed(run_case(Leaves, "test_1_nothing"), 1)
    assert seen["first loop"].is_closed()
    # As asyncio.Runner leaves it: no event loop set for the thread.
    with pytest.raises(RuntimeError, match="There is no current event loop"):
        asyncio.get_event_loop_policy().get_event_loop()
    assert_passed(run_case(Leaves), 2)
    assert seen["first loop"].is_closed()
    assert seen["loop"].is_closed()
    assert seen["generator closed on its loop"] is True
    assert seen["task"].cancelled()
    assert not [t for t in threading.enumerate() if t.name.startswith("asyncio_")]
    # As asyncio.Runner leaves it: no event loop set for the thread.
    with pytest.raises(RuntimeError, match="There is no current event loop"):
        asyncio.get_event_loop_policy().get_event_loop()


@pytest.mark.parametrize("queue", ["call_soon", "call_later"])
def test_callbacks_a_test_left_due_run_before_its_loop_closes(queue: str) -> None:
    ran: list[str] = []

    class LeavesACallback(AsyncTestCase):
        async def test_it(self) -> None:
            loop = asyncio.get_running_loop()
            # Queued by a callback that runs as the test ends: due when the loop stops.
            if queue == "call_soon":
                loop.call_soon(loop.call_soon, ran.append, "ran")
            else:
                loop.call_soon(loop.call_later, 0, ran.append, "ran")

    assert_passed(run_case(LeavesACallback), 1)
    assert ran == ["ran"]
