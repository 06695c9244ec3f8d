# pytest-style tests: functions and fixtures, run by pytest with pytest-django and the
# djasynctest plugin (pytest.ini: -p djasynctest.pytest). Every row made by a fixture,
# a test or a view reached through async_client is rolled back after each test.
# (manage.py test finds no TestCase here, and skips this module.)
import pytest
from django.contrib.auth.models import User

from orders.models import Item, Order


@pytest.fixture
async def user(db):
    return await User.objects.acreate(username="ann", email="ann@example.com")


@pytest.fixture
def pen(db):
    # A sync fixture: its ORM calls run in the test's transaction too.
    return Item.objects.create(name="pen", price=2)


class TestOrders:
    @pytest.fixture(autouse=True)
    async def logged_in(self, user, async_client):
        await async_client.aforce_login(user)
        yield
        await async_client.alogout()

    async def test_order(self, async_client, pen):
        response = await async_client.post("/orders/", {"item": pen.pk})
        assert response.status_code == 201
        assert await Order.objects.acount() == 1  # gone after this test

    async def test_confirmation_mail_on_commit(
        self, async_client, pen, django_capture_on_commit_callbacks, mailoutbox
    ):
        async with django_capture_on_commit_callbacks(execute=True):
            await async_client.post("/orders/", {"item": pen.pk})
        assert [mail.to for mail in mailoutbox] == [["ann@example.com"]]

    async def test_listing_takes_three_queries(self, async_client, pen, django_assert_num_queries):
        await async_client.post("/orders/", {"item": pen.pk, "quantity": 2})
        async with django_assert_num_queries(3):  # the session, its user, the orders
            response = await async_client.get("/orders/")
        [order] = response.json()["orders"]
        assert (order["item"], order["quantity"]) == ("pen", 2)


@pytest.mark.django_db
async def test_orders_start_empty():
    assert await Order.objects.acount() == 0


@pytest.mark.django_db
@pytest.mark.djasynctest(timeout=5)  # fails, with every task's stack, if it hangs
async def test_health_counts_only_this_tests_items(async_client, pen):
    response = await async_client.get("/health/")
    assert response.json() == {"status": "ok", "items": 1}
