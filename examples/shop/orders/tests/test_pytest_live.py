# A live server for pytest tests (pytest, with the djasynctest plugin): async_live_server
# serves the project's ASGI application (settings.ASGI_APPLICATION: HTTP and WebSockets)
# on the test's event loop, inside the test's transaction.
import httpx
import pytest
from django.contrib.auth.models import User

from orders.models import Item, Order

CSRF_SECRET = "live0server0test0csrf0secret0032"  # any 32 letters and digits


@pytest.fixture
async def http(async_live_server, async_client):
    user = await User.objects.acreate(username="alice")
    await async_client.aforce_login(user)
    cookies = {name: morsel.value for name, morsel in async_client.cookies.items()}
    cookies["csrftoken"] = CSRF_SECRET
    async with httpx.AsyncClient(
        base_url=async_live_server.url,
        cookies=cookies,
        headers={"X-CSRFToken": CSRF_SECRET},
        verify=False,
    ) as client:
        yield client


async def test_place_order_over_http(http):
    pen = await Item.objects.acreate(name="pen", price=2)  # seen by the server
    response = await http.post("/orders/", data={"item": pen.pk, "quantity": 2})
    assert response.status_code == 201
    order = await Order.objects.aget(pk=response.json()["id"])  # the server's row, here
    assert order.quantity == 2


async def test_rolled_back(http):
    assert await Order.objects.acount() == 0
