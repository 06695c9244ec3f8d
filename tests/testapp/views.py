from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse

from tests.testapp.models import Item, Order


async def items(request: HttpRequest) -> JsonResponse:
    names = [item.name async for item in Item.objects.order_by("name")]
    return JsonResponse({"items": names})


@login_required
async def orders(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    if request.method == "POST":
        item = await Item.objects.aget(pk=request.POST["item"])
        order = await Order.objects.acreate(item=item, user=user)
        return JsonResponse({"id": order.pk}, status=201)
    count = await Order.objects.filter(user=user).acount()
    return JsonResponse({"orders": count})


def sync_items(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": Item.objects.count()})
