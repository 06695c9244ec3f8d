from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, JsonResponse
from django.urls import path

from tests.testapp import urls
from tests.testapp.models import Item, Order


async def orders(request: HttpRequest) -> JsonResponse:
    """Orders item number ``item`` (made on first order) for the logged-in user."""
    user = await request.auser()
    if isinstance(user, AnonymousUser):
        return JsonResponse({"error": "log in first"}, status=403)
    pk = int(request.POST["item"])
    item, _ = await Item.objects.aget_or_create(pk=pk, defaults={"name": f"item {pk}"})
    order = await Order.objects.acreate(item=item, user=user)
    return JsonResponse({"id": order.pk}, status=201)


urlpatterns = [path("orders/", orders), *urls.urlpatterns]
