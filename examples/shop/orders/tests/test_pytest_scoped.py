# Database fixtures of a wider scope (pytest, with the djasynctest plugin): the module's
# catalogue is made once for every test of this module, each test runs in a transaction
# of its own inside the module's, and the module's rows are rolled back after its last
# test. (manage.py test finds no TestCase here, and skips this module.)
import pytest

from orders.models import Item


@pytest.fixture(scope="module")
async def catalogue(db_module):
    return [await Item.objects.acreate(name=f"item {price}", price=price) for price in range(50)]


async def test_cheapest(catalogue, db):
    assert (await Item.objects.order_by("price").afirst()).price == 0


def test_sync_test_sees_the_catalogue(catalogue, db):
    Item.objects.create(name="extra", price=7)  # rolled back after this test
    assert Item.objects.count() == 51


async def test_changes_do_not_reach_the_next_test(catalogue, db):
    assert await Item.objects.acount() == 50
    catalogue[0].price = 99
    await catalogue[0].asave()
    assert await Item.objects.filter(price=99).aexists()


async def test_catalogue_as_made(catalogue, db):
    assert catalogue[0].price == 0
    assert not await Item.objects.filter(price=99).aexists()
