"""Database fixtures of any scope under the pytest plugin (``db_session`` ... ``db_class``).

Each test writes a user's test modules into a pytester project (see
tests/test_pytest_plugin.py) and runs pytest on them. The user's tests check
what each test sees: the rows of the scoped fixtures, and none of the rows of
the tests before them.
"""

from __future__ import annotations

import pytest

from tests.test_pytest_plugin import make_project, run

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return make_project(pytester, monkeypatch)


# The example, as users write it (Item's names are unique: a fixture whose
# rows were left behind could not make them again).
CATALOGUE = """
import pytest
from tests.testapp.models import Item


@pytest.fixture(scope="module")
async def catalogue(db_module):
    return [await Item.objects.acreate(name=f"item {p}", price=p) for p in range(100)]


async def test_cheapest(catalogue, db):
    assert (await Item.objects.order_by("price").afirst()).price == 0


def test_count(catalogue, db):
    Item.objects.create(name="extra", price=5)   # rolled back after this test
    assert Item.objects.count() == 101


async def test_each_test_in_its_own_transaction(catalogue, db):
    assert await Item.objects.acount() == 100
    await Item.objects.filter(price__lt=50).adelete()


def test_changes_to_rows_and_objects_do_not_reach_the_next_test(catalogue, db):
    assert Item.objects.count() == 100
    catalogue[0].price = 1000
    catalogue[0].save()


async def test_objects_are_put_back_after_each_test(catalogue, db):
    assert catalogue[0].price == 0
    assert (await Item.objects.aget(name="item 0")).price == 0
"""

LATER_MODULE = """
from tests.testapp.models import Item


def test_the_module_rows_are_gone(db):
    assert Item.objects.count() == 0
"""


def test_module_fixture_rows_shared_by_its_tests_and_rolled_back(project: pytest.Pytester) -> None:
    project.makepyfile(test_catalogue=CATALOGUE, test_later=LATER_MODULE)
    run(project, "-p", "no:randomly").assert_outcomes(passed=6)


def test_scopes_nest_and_each_rolls_back_at_its_end(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="session")
        def shop(db_session):
            return Item.objects.create(name="shop")


        @pytest.fixture(scope="session", autouse=True)
        def django_db_setup(django_db_setup, django_db_blocker):
            yield
            # After the last scope's rollback, before pytest-django drops the database.
            with django_db_blocker.unblock():
                assert not Item.objects.exists(), "the session's rows were kept"
                print("SESSION ROWS ROLLED BACK")
        """
    )
    project.makepyfile(
        test_a="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        def shelf(shop, db_module):
            return Item.objects.create(name="shelf")


        @pytest.fixture(scope="class")
        async def pen(shelf, db_class):
            return await Item.objects.acreate(name="pen")


        def names():
            return sorted(Item.objects.values_list("name", flat=True))


        class TestWithThePen:
            def test_sees_every_scope(self, pen, db):
                assert names() == ["pen", "shelf", "shop"]

            async def test_and_again(self, pen, db):
                assert await Item.objects.acount() == 3


        def test_the_class_rows_are_gone(shelf, db):
            assert names() == ["shelf", "shop"]
        """,
        test_b="""
        from tests.testapp.models import Item


        def test_the_module_rows_are_gone(shop, db):
            assert list(Item.objects.values_list("name", flat=True)) == ["shop"]
        """,
    )
    result = run(project, "-p", "no:randomly", "-s")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*SESSION ROWS ROLLED BACK*"])


def test_what_a_test_changes_in_the_fixture_objects_is_put_back(
    project: pytest.Pytester,
) -> None:
    """The objects of a scoped fixture are as it made them for each test: the model
    instances' fields and cached relations, the lists and dicts that hold them."""
    project.makepyfile(
        test_objects="""
        import threading

        import pytest
        from tests.testapp.models import Item, Order


        @pytest.fixture(scope="module")
        def pen(db_module):
            return Item.objects.create(name="pen", price=3)


        @pytest.fixture(scope="module")
        def shelf(pen, db_module):
            order = Order.objects.create(item=pen)
            return {"items": [pen], "order": order, "lock": threading.Lock()}


        @pytest.fixture
        def first(shelf):
            return shelf["items"][0]


        def test_changes_everything(pen, shelf, first, db):
            assert first is pen is shelf["items"][0]
            pen.price = 1000
            pen.save()
            pen.delete()
            shelf["items"].append(Item(name="new"))
            shelf["extra"] = True
            shelf["order"].item = Item(name="other")


        def test_sees_them_as_made(pen, shelf, db):
            assert (pen.pk, pen.price) == (Item.objects.get(name="pen").pk, 3)
            assert shelf["items"] == [pen] and "extra" not in shelf
            assert shelf["order"].item is pen
            assert Order.objects.get().item_id == pen.pk
            assert isinstance(shelf["lock"], type(threading.Lock()))
        """
    )
    run(project, "-p", "no:randomly").assert_outcomes(passed=2)


def test_parametrized_module_fixture_rolled_back_between_its_params(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_params="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module", params=[1, 2])
        async def items(request, db_module):
            return [await Item.objects.acreate(name=f"item {i}") for i in range(request.param)]


        @pytest.fixture(scope="module")
        def pen(db_module):
            return Item.objects.create(name="pen")


        def test_count(pen, items, db):
            assert Item.objects.count() == len(items) + 1


        async def test_names(pen, items, db):
            names = {item.name async for item in Item.objects.all()}
            assert names == {"pen", *(f"item {i}" for i in range(len(items)))}
        """
    )
    run(project, "-p", "no:randomly").assert_outcomes(passed=4)


def test_session_fixture_first_asked_for_in_a_later_module(project: pytest.Pytester) -> None:
    """Its rows live as long as the session: the module's transaction, open already, is
    closed before the session's row is made, and the module's fixture set up again."""
    project.makeconftest(
        """
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="session")
        def shop(db_session):
            return Item.objects.create(name="shop")
        """
    )
    project.makepyfile(
        test_a="""
        import pytest
        from tests.testapp.models import Item

        made = []


        @pytest.fixture(scope="module")
        def shelf(db_module):
            made.append("shelf")
            return Item.objects.create(name="shelf")


        def test_without_the_session_fixture(shelf, db):
            assert Item.objects.count() == 1


        def test_with_it(shop, shelf, db):
            assert sorted(Item.objects.values_list("name", flat=True)) == ["shelf", "shop"]
            assert made == ["shelf", "shelf"]
        """,
        test_b="""
        from tests.testapp.models import Item


        def test_the_session_row_lives_on(shop, db):
            assert list(Item.objects.values_list("name", flat=True)) == ["shop"]
        """,
    )
    run(project, "-p", "no:randomly").assert_outcomes(passed=3)


def test_session_fixture_asked_for_from_inside_a_test_is_refused(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_dynamic="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="session")
        def shop(db_session):
            return Item.objects.create(name="shop")


        def test_asks_late(db, request):
            request.getfixturevalue("shop")


        def test_the_run_goes_on(shop, db):
            assert Item.objects.count() == 1
        """
    )
    result = run(project, "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Fixture 'db_session' (session scope) is set up inside the transaction of test "
            "test_dynamic.py::test_asks_late*rather than with request.getfixturevalue()*"
        ]
    )


def test_a_failing_scoped_fixture_rolls_back_what_it_made(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_failing="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        def broken(db_module):
            Item.objects.create(name="half")
            raise RuntimeError("the fixture failed")


        @pytest.fixture(scope="module")
        async def broken_teardown(db_module):
            await Item.objects.acreate(name="kept while the module runs")
            yield
            await Item.objects.acreate(name="made in the teardown")
            raise RuntimeError("the teardown failed")


        def test_uses_it(broken, db):
            pass


        def test_after_it(broken_teardown, db):
            assert list(Item.objects.values_list("name", flat=True)) == [
                "kept while the module runs"
            ]
        """,
        test_later=LATER_MODULE,
    )
    result = run(project, "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        ["*ERROR at setup of test_uses_it*", "*ERROR at teardown of test_after_it*"]
    )


def test_transactional_tests_and_test_classes_run_outside_the_scopes(
    project: pytest.Pytester,
) -> None:
    """They commit and flush: the scoped fixtures are torn down before them, and set up
    again, with their rows, for the next test that asks for one."""
    project.makepyfile(
        test_mixed="""
        import pytest
        from django.test import TestCase
        from tests.testapp.models import Item
        from djasynctest import AsyncTestCase

        made = []


        @pytest.fixture(scope="module")
        def pen(db_module):
            made.append("pen")
            return Item.objects.create(name="pen")


        def test_before(pen, db):
            assert Item.objects.count() == 1


        @pytest.mark.django_db(transaction=True)
        async def test_transactional():
            assert await Item.objects.acount() == 0
            await Item.objects.acreate(name="committed")


        class TestDjangos(TestCase):
            def test_class(self):
                self.assertEqual(Item.objects.count(), 0)


        class TestOurs(AsyncTestCase):
            async def test_class(self):
                self.assertEqual(await Item.objects.acount(), 0)


        def test_after(pen, db):
            assert list(Item.objects.values_list("name", flat=True)) == ["pen"]
            assert len(made) >= 2
        """
    )
    run(project).assert_outcomes(passed=5)


def test_transactional_test_of_a_scoped_fixture_is_refused(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_refused="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        def pen(db_module):
            return Item.objects.create(name="pen")


        def test_transactional(pen, transactional_db):
            pass
        """
    )
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_transactional is a transactional test*uses db_module (through its fixtures), "
            "whose transaction it would commit in*"
        ]
    )


def test_every_test_database_in_the_scopes(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_databases="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        async def pens(db_module):
            await Item.objects.acreate(name="pen")
            await Item.objects.using("other").acreate(name="other pen")


        @pytest.mark.django_db(databases=["default", "other"])
        def test_both(pens):
            assert Item.objects.using("other").count() == Item.objects.count() == 1
            Item.objects.using("other").create(name="more")


        @pytest.mark.django_db(databases=["default", "other"])
        async def test_each_test_rolled_back(pens):
            assert await Item.objects.using("other").acount() == 1
        """,
        test_later="""
        import pytest
        from tests.testapp.models import Item


        @pytest.mark.django_db(databases=["default", "other"])
        def test_gone():
            assert Item.objects.using("other").count() == Item.objects.count() == 0
        """,
    )
    run(project, "-p", "no:randomly").assert_outcomes(passed=3)


@pytest.mark.parametrize("dist", ["load", "loadscope"])
def test_pytest_xdist(project: pytest.Pytester, dist: str) -> None:
    project.makepyfile(test_catalogue=CATALOGUE, test_later=LATER_MODULE)
    run(project, "-p", "xdist", "-n", "2", "--dist", dist).assert_outcomes(passed=6)


def test_the_loops_of_pytest_asyncio(project: pytest.Pytester) -> None:
    """A module fixture on pytest-asyncio's module loop: its teardown too reaches the
    module's transaction."""
    project.makeini(
        """
        [pytest]
        addopts = -p djasynctest.pytest -p no:cacheprovider -p no:randomly
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = module
        asyncio_default_test_loop_scope = module
        filterwarnings = error
        """
    )
    project.makepyfile(
        test_asyncio="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        async def pens(db_module):
            yield [await Item.objects.acreate(name=f"pen {i}") for i in range(3)]
            assert await Item.objects.acount() == 3


        async def test_async(pens, db):
            assert await Item.objects.acount() == 3
            await Item.objects.acreate(name="ink")


        def test_sync(pens, db):
            assert Item.objects.count() == 3
        """,
        test_later=LATER_MODULE,
    )
    run(project).assert_outcomes(passed=3)


def test_a_test_without_the_database_cannot_query(project: pytest.Pytester) -> None:
    """As pytest-django has it: a scoped fixture's database access is its own."""
    project.makepyfile(
        test_blocked="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        def pen(db_module):
            return Item.objects.create(name="pen")


        def test_reads_the_fixture_object(pen):
            assert pen.name == "pen"


        def test_with_the_database(pen, db):
            assert Item.objects.count() == 1


        def test_queries(pen):
            Item.objects.count()
        """
    )
    result = run(project, "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: Database access not allowed*"])


def test_a_reused_database_keeps_nothing(project: pytest.Pytester) -> None:
    """A run stopped at its first failure (-x) inside a module's transaction leaves no row
    in the database that --reuse-db keeps for the next run."""
    project.makepyfile(
        test_a_stops="""
        import pytest
        from tests.testapp.models import Item


        @pytest.fixture(scope="module")
        def pens(db_module):
            return [Item.objects.create(name=f"item {i}") for i in range(3)]


        def test_fails(pens, db):
            raise AssertionError("stop here")
        """,
        test_catalogue=CATALOGUE,
        test_later=LATER_MODULE,
    )
    stopped = run(project, "-p", "no:randomly", "--reuse-db", "-x")
    stopped.assert_outcomes(failed=1)
    run(project, "-p", "no:randomly", "--reuse-db", "-k", "not stops").assert_outcomes(passed=6)
    run(project, "-p", "no:randomly", "--create-db", "-k", "catalogue").assert_outcomes(passed=5)
