"""Context follows the test: asgiref Locals and context variables, on both threads."""

from __future__ import annotations

import contextvars
import json
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone, translation

from djasynctest import AsyncTestCase
from tests.testapp.models import TENANT
from tests.testapp.views import context_values
from tests.utils import assert_passed, run_case

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="none")

FRENCH = {"language": "fr", "timezone": "Asia/Tokyo", "tenant": "acme"}


class _Tenant:
    """A context manager that sets the third-party Local, as a tenant middleware would."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        TENANT.name = self.name

    def __exit__(self, *exc_info: Any) -> None:
        del TENANT.name


def _defaults() -> dict[str, Any]:
    return {
        "language": settings.LANGUAGE_CODE,
        "timezone": timezone.get_default_timezone_name(),
        "tenant": None,
    }


def _seen(response: Any) -> dict[str, Any]:
    return json.loads(response.content)  # type: ignore[no-any-return]


@pytest.mark.parametrize("loop_scope", ["test", "class", "session"])
def test_class_level_context_reaches_every_test_hook_and_request(loop_scope: str) -> None:
    seen: dict[str, dict[str, Any]] = {}

    class ClassContext(AsyncTestCase):
        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            cls.enterClassContext(translation.override("fr"))
            cls.enterClassContext(timezone.override("Asia/Tokyo"))
            cls.enterClassContext(_Tenant("acme"))

        @classmethod
        def setUpTestData(cls) -> None:
            REQUEST_ID.set("class")

        def setUp(self) -> None:
            seen["sync setUp"] = context_values()

        async def asyncSetUp(self) -> None:
            seen["asyncSetUp"] = context_values()

        def test_sync(self) -> None:
            seen["sync test"] = context_values()
            seen["sync client"] = _seen(self.client.get("/sync-context/"))
            self.assertEqual(REQUEST_ID.get(), "class")

        async def test_async(self) -> None:
            seen["async test"] = context_values()
            seen["async client"] = _seen(await self.async_client.get("/context/"))
            seen["async client, sync view"] = _seen(await self.async_client.get("/sync-context/"))
            self.assertEqual(REQUEST_ID.get(), "class")

    ClassContext.loop_scope = loop_scope  # type: ignore[assignment]
    assert_passed(run_case(ClassContext), 2)
    assert seen == dict.fromkeys(
        [
            "sync setUp",
            "asyncSetUp",
            "sync test",
            "sync client",
            "async test",
            "async client",
            "async client, sync view",
        ],
        FRENCH,
    )

    class NextClass(AsyncTestCase):
        def test_sync(self) -> None:
            seen["next sync"] = context_values()
            self.assertEqual(REQUEST_ID.get(), "none")

        async def test_async(self) -> None:
            seen["next async"] = context_values()
            self.assertEqual(REQUEST_ID.get(), "none")

    assert_passed(run_case(NextClass), 2)
    nothing = _defaults()
    assert seen["next sync"] == seen["next async"] == nothing


def test_context_set_in_a_hook_is_seen_by_the_rest_of_the_test_only() -> None:
    seen: dict[str, dict[str, Any]] = {}

    class HookContext(AsyncTestCase):
        def setUp(self) -> None:
            if self._testMethodName == "test_async_after_sync_setup":
                translation.activate("fr")
                timezone.activate("Asia/Tokyo")
                TENANT.name = "acme"

        async def asyncSetUp(self) -> None:
            if self._testMethodName == "test_sync_after_async_setup":
                translation.activate("fr")
                timezone.activate("Asia/Tokyo")
                TENANT.name = "acme"

        async def test_async_after_sync_setup(self) -> None:
            seen["async test"] = context_values()
            seen["async client"] = _seen(await self.async_client.get("/context/"))

        def test_sync_after_async_setup(self) -> None:
            seen["sync test"] = context_values()
            seen["sync client"] = _seen(self.client.get("/sync-context/"))

        def test_z_sync_alone(self) -> None:
            seen["later sync test"] = context_values()

        async def test_z_async_alone(self) -> None:
            seen["later async test"] = context_values()

    assert_passed(run_case(HookContext), 4)
    assert seen["async test"] == seen["async client"] == FRENCH
    assert seen["sync test"] == seen["sync client"] == FRENCH
    nothing = _defaults()
    assert seen["later sync test"] == seen["later async test"] == nothing


def test_context_set_in_the_test_reaches_the_tear_down_hooks_on_either_thread() -> None:
    seen: list[tuple[str, str]] = []

    class TearDownContext(AsyncTestCase):
        async def test_async(self) -> None:
            translation.activate("fr")
            self.addCleanup(lambda: seen.append(("sync cleanup", translation.get_language())))

        def tearDown(self) -> None:
            seen.append(("sync tearDown", translation.get_language()))

        async def asyncTearDown(self) -> None:
            seen.append(("asyncTearDown", translation.get_language()))

    assert_passed(run_case(TearDownContext), 1)
    assert seen == [("asyncTearDown", "fr"), ("sync tearDown", "fr"), ("sync cleanup", "fr")]
