"""Django's testing API inside async tests, where Django's own async support falls short."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.apps import apps
from django.core import mail
from django.core.checks import run_checks
from django.db import connection, connections, transaction
from django.db.models.signals import post_save
from django.test import modify_settings, override_settings
from django.test.utils import CaptureQueriesContext

from djasynctest import AsyncSimpleTestCase, AsyncTestCase, AsyncTransactionTestCase
from djasynctest._dbthread import db_thread
from tests.testapp.models import Item, Order, Tag
from tests.utils import assert_passed, leftover_rows, problems, run_case

# --- assertNumQueries ---------------------------------------------------------


def test_assert_num_queries_counts_async_orm_queries() -> None:
    class Counting(AsyncTestCase):
        async def test_with(self) -> None:
            with self.assertNumQueries(2):
                await Item.objects.acreate(name="a")
                await Item.objects.acount()

        async def test_async_with(self) -> None:
            async with self.assertNumQueries(1):
                await Item.objects.acount()

        async def test_async_func(self) -> None:
            await self.assertNumQueries(1, Item.objects.acount)

        def test_sync_unchanged(self) -> None:
            with self.assertNumQueries(1):
                Item.objects.count()
            self.assertNumQueries(1, Item.objects.count)

        async def test_client_request(self) -> None:
            with self.assertNumQueries(1):
                await self.async_client.get("/items/")

    assert_passed(run_case(Counting), 5)


def test_assert_num_queries_fails_with_djangos_message() -> None:
    class Wrong(AsyncTestCase):
        async def test_it(self) -> None:
            async with self.assertNumQueries(3):
                await Item.objects.acount()

    [text] = problems(run_case(Wrong))
    assert "AssertionError: 1 != 3 : 1 queries executed, 3 expected" in text
    assert 'Captured queries were:\n1. SELECT COUNT(*) AS "__count" FROM "testapp_item"' in text


def test_capture_queries_lists_the_queries_of_async_code() -> None:
    class Capturing(AsyncTestCase):
        async def test_async_with(self) -> None:
            async with self.captureQueries() as captured:
                await Item.objects.acreate(name="a")
                await self.async_client.get("/items/")
            self.assertEqual(len(captured.captured_queries), 2)
            self.assertIn('INSERT INTO "testapp_item"', captured.captured_queries[0]["sql"])

        async def test_with_other_database(self) -> None:
            with self.captureQueries(using="other") as captured:
                await Item.objects.using("other").acount()
            self.assertEqual(len(captured), 1)

        def test_sync(self) -> None:
            with self.captureQueries() as captured:
                Item.objects.count()
            self.assertEqual(len(captured), 1)

    Capturing.databases = {"default", "other"}
    assert_passed(run_case(Capturing), 3)


def test_djangos_capture_queries_context_in_async_code_names_the_right_tool() -> None:
    class Direct(AsyncTestCase):
        async def test_it(self) -> None:
            with CaptureQueriesContext(connection):
                await Item.objects.acount()

    [text] = problems(run_case(Direct))
    assert "SynchronousOnlyOperation" in text
    assert (
        "djasynctest: CaptureQueriesContext(connection) would count the queries of the event "
        "loop's thread, where none of the test's queries run. Use self.assertNumQueries(n), "
        "or self.captureQueries() for the list of queries (with or async with): both read "
        "the test's DB thread."
    ) in text


# --- captureOnCommitCallbacks -------------------------------------------------


def test_capture_on_commit_callbacks_from_async_views() -> None:
    class Capturing(AsyncTestCase):
        async def test_with_execute(self) -> None:
            with self.captureOnCommitCallbacks(execute=True) as callbacks:
                response = await self.async_client.post("/items/create/", {"name": "pen"})
            self.assertEqual(response.status_code, 201)
            self.assertEqual(len(callbacks), 1)
            self.assertEqual([m.subject for m in mail.outbox], ["Created pen"])

        async def test_async_with_without_execute(self) -> None:
            async with self.captureOnCommitCallbacks() as callbacks:
                await self.async_client.post("/items/create/", {"name": "ink"})
            self.assertEqual(len(callbacks), 1)
            self.assertEqual(mail.outbox, [])

        async def test_nothing_runs_without_capture(self) -> None:
            # As in Django's TestCase: the transaction never commits.
            await self.async_client.post("/items/create/", {"name": "cap"})
            self.assertEqual(mail.outbox, [])

    assert_passed(run_case(Capturing), 3)
    assert leftover_rows() == {"items": [], "orders": 0}


def test_on_commit_runs_after_commit_in_transaction_test_case() -> None:
    class Committing(AsyncTransactionTestCase):
        async def test_it(self) -> None:
            await self.async_client.post("/items/create/", {"name": "real"})
            self.assertEqual([m.subject for m in mail.outbox], ["Created real"])

    assert_passed(run_case(Committing), 1)


# --- assertions on querysets and async client responses -----------------------


def test_assert_query_set_equal_on_async_and_lazy_querysets() -> None:
    class QuerySets(AsyncTestCase):
        async def asyncSetUp(self) -> None:
            await Item.objects.abulk_create([Item(name="b"), Item(name="a")])

        async def test_evaluated_async(self) -> None:
            qs = Item.objects.order_by("name")
            [item async for item in qs]
            self.assertQuerySetEqual(qs, ["a", "b"], transform=str)

        async def test_lazy(self) -> None:
            self.assertQuerySetEqual(Item.objects.order_by("name"), ["a", "b"], transform=str)
            self.assertQuerySetEqual(
                Item.objects.all(), ["b", "a"], transform=lambda i: i.name, ordered=False
            )

        async def test_fails(self) -> None:
            self.assertQuerySetEqual(Item.objects.order_by("name"), ["z"], transform=str)

    result = run_case(QuerySets)
    assert result.testsRun == 3
    [(case, text)] = result.failures
    assert "test_fails" in str(case)
    assert "AssertionError: Lists differ: ['a', 'b'] != ['z']" in text


def test_response_assertions_on_async_client_responses() -> None:
    class Responses(AsyncTestCase):
        async def asyncSetUp(self) -> None:
            await Item.objects.acreate(name="pencil")

        async def test_contains_and_template(self) -> None:
            response = await self.async_client.get("/items/page/")
            self.assertContains(response, "<li>pencil</li>", html=True)
            self.assertNotContains(response, "eraser")
            self.assertTemplateUsed(response, "testapp/items.html")

        async def test_template_used_as_context_manager(self) -> None:
            with self.assertTemplateUsed("testapp/items.html"):
                await self.async_client.get("/items/page/")

        async def test_form_error(self) -> None:
            response = await self.async_client.post("/items/form/", {"price": "x"})
            self.assertFormError(response.context["form"], "name", "This field is required.")

        async def test_redirect_fetches_target_with_the_test_rows(self) -> None:
            response = await self.async_client.get("/go/")
            self.assertRedirects(response, "/items/")

        async def test_redirect_to_a_missing_page_fails(self) -> None:
            response = await self.async_client.get("/go/")
            self.assertRedirects(response, "/items/", target_status_code=404)

    result = run_case(Responses)
    assert result.testsRun == 5
    [(case, text)] = result.failures
    assert "missing_page" in str(case)
    assert "Couldn't retrieve redirection page '/items/': response code was 200 (expected 404)" in (
        text
    )


# --- settings -------------------------------------------------------------------


@override_settings(ITEMS_PER_PAGE=10)
class _ClassSettings(AsyncTestCase):
    __test__ = False
    seen: list[object] = []

    async def test_class_decorator(self) -> None:
        from django.conf import settings

        self.seen.append(settings.ITEMS_PER_PAGE)

    @override_settings(ITEMS_PER_PAGE=20)
    async def test_method_decorator(self) -> None:
        from django.conf import settings

        self.seen.append(settings.ITEMS_PER_PAGE)

    async def test_context_managers(self) -> None:
        from django.conf import settings

        with self.settings(ITEMS_PER_PAGE=30):
            self.seen.append(settings.ITEMS_PER_PAGE)
        async with self.settings(ITEMS_PER_PAGE=40):
            self.seen.append(settings.ITEMS_PER_PAGE)
        with override_settings(ITEMS_PER_PAGE=50):
            self.seen.append(settings.ITEMS_PER_PAGE)
        async with self.modify_settings(INSTALLED_APPS={"remove": ["tests.testapp"]}):
            self.seen.append("tests.testapp" in settings.INSTALLED_APPS)


@modify_settings(ALLOWED_HOSTS={"append": "example.com"})
class _HookSettings(AsyncTestCase):
    __test__ = False
    seen: list[object] = []

    @override_settings(ITEMS_PER_PAGE=60)
    async def asyncSetUp(self) -> None:
        from django.conf import settings

        self.seen.append(settings.ITEMS_PER_PAGE)

    async def test_it(self) -> None:
        from django.conf import settings

        self.seen.append("example.com" in settings.ALLOWED_HOSTS)


def test_settings_decorators_and_context_managers() -> None:
    assert_passed(run_case(_ClassSettings), 3)
    assert sorted(map(str, _ClassSettings.seen)) == sorted(map(str, [10, 20, 30, 40, 50, False]))
    assert_passed(run_case(_HookSettings), 1)
    assert _HookSettings.seen == [60, True]


def test_time_zone_change_reaches_the_db_threads_connection() -> None:
    names: list[str] = []

    def zone() -> str:
        return connection.timezone_name

    class TimeZone(AsyncTestCase):
        async def test_it(self) -> None:
            names.append(await sync_to_async(zone)())
            with self.settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
                names.append(await sync_to_async(zone)())
                item = await Item.objects.acreate(name="tz")
                self.assertEqual(item.pk, (await Item.objects.aget(pk=item.pk)).pk)
            names.append(await sync_to_async(zone)())

    assert_passed(run_case(TimeZone), 1)
    assert names == ["UTC", "Asia/Tokyo", "UTC"]


# --- several databases ----------------------------------------------------------


def test_all_databases_and_unlisted_alias_from_async_code() -> None:
    class AllDatabases(AsyncTestCase):
        databases = "__all__"

        async def test_it(self) -> None:
            await Item.objects.using("other").acreate(name="other")
            self.assertEqual(await Item.objects.using("other").acount(), 1)

    class DefaultOnly(AsyncTestCase):
        async def test_async(self) -> None:
            await Item.objects.using("other").acount()

        def test_sync(self) -> None:
            Item.objects.using("other").count()

    assert_passed(run_case(AllDatabases), 1)
    assert Item.objects.using("other").count() == 0
    texts = problems(run_case(DefaultOnly))
    assert len(texts) == 2
    for text in texts:
        assert "Database queries to 'other' are not allowed in this test." in text


def test_atomics_are_open_on_every_listed_alias_of_the_db_thread() -> None:
    states: list[tuple[bool, bool]] = []

    def in_atomic() -> tuple[bool, bool]:
        return (connections["default"].in_atomic_block, connections["other"].in_atomic_block)

    class Atomics(AsyncTestCase):
        databases = {"default", "other"}

        async def test_it(self) -> None:
            states.append(await sync_to_async(in_atomic)())

    assert_passed(run_case(Atomics), 1)
    assert states == [(True, True)]


# --- AsyncTransactionTestCase ---------------------------------------------------


def test_transaction_test_case_features() -> None:
    seen: list[object] = []

    class Features(AsyncTransactionTestCase):
        available_apps = ["tests.testapp", "django.contrib.auth", "django.contrib.contenttypes"]
        reset_sequences = True
        fixtures = ["items.json"]

        async def test_1(self) -> None:
            seen.append(apps.is_installed("django.contrib.sessions"))
            seen.append((await Item.objects.acreate(name="first")).pk)
            await Item.objects.filter(pk=100).adelete()

        async def test_2(self) -> None:
            seen.append((await Item.objects.acreate(name="second")).pk)
            seen.append(await Item.objects.filter(pk=100).aexists())

    assert_passed(run_case(Features), 2)
    # The fixture has pk 100; the sequence restarts at 101 in each test (SQLite
    # and PostgreSQL alike follow the largest pk loaded by the fixture).
    assert seen[0] is False
    assert seen[1] == seen[2]
    assert seen[3] is True
    assert apps.is_installed("django.contrib.sessions")


def test_serialized_rollback_restores_the_snapshot_the_runner_took() -> None:
    """The runner snapshots the database on its thread; the DB thread restores it."""
    seen: list[list[str]] = []

    class Serialized(AsyncTransactionTestCase):
        serialized_rollback = True

        async def test_1(self) -> None:
            seen.append([tag.name async for tag in Tag.objects.all()])
            await Tag.objects.all().adelete()

        async def test_2(self) -> None:
            seen.append([tag.name async for tag in Tag.objects.all()])

    Tag.objects.all().delete()
    Tag.objects.create(name="snapshot")
    connection._test_serialized_contents = connection.creation.serialize_db_to_string()  # type: ignore[attr-defined]
    Tag.objects.all().delete()
    try:
        assert_passed(run_case(Serialized), 2)
    finally:
        del connection._test_serialized_contents  # type: ignore[attr-defined]
    assert seen == [["snapshot"], ["snapshot"]]


# --- signals ----------------------------------------------------------------------


def test_async_signal_receivers_see_and_write_the_tests_rows() -> None:
    async def on_item_saved(sender: type, instance: Item, created: bool, **kwargs: object) -> None:
        if created and instance.name == "trigger":
            await Order.objects.acreate(item=instance)

    class Signals(AsyncTestCase):
        async def test_it(self) -> None:
            post_save.connect(on_item_saved, sender=Item, dispatch_uid="test-signal")
            self.addCleanup(post_save.disconnect, dispatch_uid="test-signal", sender=Item)
            await Item.objects.acreate(name="trigger")
            self.assertEqual(await Order.objects.acount(), 1)

    assert_passed(run_case(Signals), 1)
    assert leftover_rows() == {"items": [], "orders": 0}


def test_transaction_atomic_in_async_test_through_sync_to_async() -> None:
    class Atomic(AsyncTestCase):
        async def test_it(self) -> None:
            def fail_inside() -> None:
                with transaction.atomic():
                    Item.objects.create(name="undone")
                    raise ValueError

            with self.assertRaises(ValueError):
                await sync_to_async(fail_inside)()
            self.assertEqual(await Item.objects.acount(), 0)

    assert_passed(run_case(Atomic), 1)


# --- SimpleTestCase: no queries --------------------------------------------------------


def test_simple_test_case_reads_what_the_runner_learnt_of_the_database() -> None:
    """A SimpleTestCase may not query, and may still read what a connection learns with a
    query once and caches (run_checks() reads connection.features.supports_json_field): the
    DB thread's connection objects know what the runner's checks taught the test thread's."""
    db_thread().stop(timeout=5)  # the next class starts one whose connections know nothing
    facts = {
        "supports_transactions": connection.features.supports_transactions,
        "json": connection.features.supports_json_field,
    }
    seen: dict[str, object] = {}

    class Checks(AsyncSimpleTestCase):
        def test_sync(self) -> None:
            seen["checks"] = run_checks()
            seen["sync"] = {
                "supports_transactions": connection.features.supports_transactions,
                "json": connection.features.supports_json_field,
            }

        async def test_async(self) -> None:
            seen["async"] = await sync_to_async(lambda: connection.features.supports_json_field)()

    assert_passed(run_case(Checks), 2)
    assert seen == {"checks": [], "sync": facts, "async": facts["json"]}
