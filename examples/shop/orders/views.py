import asyncio
import json

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.shortcuts import aget_object_or_404, render

from orders.models import Item, Order


async def health(request):
    return JsonResponse({"status": "ok", "items": await Item.objects.acount()})


async def item_list(request):
    items = [item async for item in Item.objects.order_by("name")]
    return render(request, "orders/item_list.html", {"items": items})


def _confirm(order_id, email):
    # Runs when the order's transaction commits: never for a rolled-back order.
    send_mail(f"Order {order_id}", "Thank you for your order.", "shop@example.com", [email])


@sync_to_async
def _place_order(user, item, quantity):
    with transaction.atomic():
        order = Order.objects.create(user=user, item=item, quantity=quantity)
        transaction.on_commit(lambda: _confirm(order.pk, user.email))
    return order


@login_required
async def orders(request):
    user = await request.auser()
    if request.method == "GET":
        mine = [
            {"id": order.pk, "item": order.item.name, "quantity": order.quantity}
            async for order in Order.objects.filter(user=user).select_related("item")
        ]
        return JsonResponse({"orders": mine})
    if request.method == "POST":
        item = await aget_object_or_404(Item, pk=request.POST.get("item"))
        order = await _place_order(user, item, int(request.POST.get("quantity", 1)))
        return JsonResponse({"id": order.pk}, status=201)
    return HttpResponseNotAllowed(["GET", "POST"])


async def order_events(request):
    """Server-sent events: the number of orders, then one event per new order."""
    limit = int(request.GET.get("limit", 3))

    async def stream():
        last = await Order.objects.acount()
        yield f"data: {json.dumps({'orders': last})}\n\n"
        sent = 1
        while sent < limit:
            count = await Order.objects.acount()
            if count != last:
                last = count
                yield f"data: {json.dumps({'orders': count})}\n\n"
                sent += 1
            else:
                await asyncio.sleep(0.01)

    return StreamingHttpResponse(stream(), content_type="text/event-stream")
