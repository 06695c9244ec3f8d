# The same tests written with pytest-asyncio and pytest-django, for comparison
# (docs/howto/migrate-from-pytest-asyncio.rst). Django's runner does not collect
# this file; tests/test_docs.py runs it with pytest.
import pytest
import pytest_asyncio
from django.contrib.auth.models import User

from orders.models import Item, Order


@pytest_asyncio.fixture
async def pen():
    return await Item.objects.acreate(name="pen", price=2)


@pytest_asyncio.fixture
async def logged_in(async_client):
    user = await User.objects.acreate(username="alice")
    await async_client.aforce_login(user)
    yield async_client
    await async_client.alogout()


# The async ORM runs on a thread that does not hold the test's transaction, so
# only transaction=True (the database flushed after each test) keeps tests apart.
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_order(logged_in, pen):
    response = await logged_in.post("/orders/", {"item": pen.pk})
    assert response.status_code == 201
    assert await Order.objects.acount() == 1
