from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth.decorators import login_required
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render

from tests.testapp.models import Item, Order


class ItemForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Item
        fields = ["name", "price"]


async def items(request: HttpRequest) -> JsonResponse:
    names = [item.name async for item in Item.objects.order_by("name")]
    return JsonResponse({"items": names})


async def async_backend_items(request: HttpRequest) -> JsonResponse:
    """Through django-async-backend's ORM (its app patches every model)."""
    if request.method == "POST":
        await Item.async_objects.acreate(name=request.POST["name"])  # type: ignore[attr-defined]
    names = [item.name async for item in Item.async_objects.order_by("name")]  # type: ignore[attr-defined]
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


@sync_to_async
def _create_with_confirmation(name: str, email: str) -> Item:
    with transaction.atomic():
        item = Item.objects.create(name=name)
        transaction.on_commit(
            lambda: send_mail(f"Created {name}", "Done.", "shop@example.com", [email])
        )
    return item


async def create_item(request: HttpRequest) -> JsonResponse:
    """Creates an item and, once the transaction commits, mails a confirmation."""
    item = await _create_with_confirmation(request.POST["name"], "owner@example.com")
    return JsonResponse({"id": item.pk}, status=201)


async def item_template(request: HttpRequest) -> HttpResponse:
    items = [item async for item in Item.objects.order_by("name")]
    return render(request, "testapp/items.html", {"items": items})


async def item_form(request: HttpRequest) -> HttpResponse:
    form = ItemForm(request.POST or None)
    return render(request, "testapp/items.html", {"form": form, "items": []})


async def go_to_items(request: HttpRequest) -> HttpResponse:
    return redirect("/items/")


async def slow_health(request: HttpRequest) -> JsonResponse:
    """A health check that blocks the event loop: what the blocking detector must find."""
    time.sleep(float(request.GET.get("seconds", "0.3")))
    return JsonResponse({"status": "ok"})


def slow_sync_health(request: HttpRequest) -> JsonResponse:
    """The same in a sync view: it runs on the DB thread and leaves the loop free."""
    time.sleep(float(request.GET.get("seconds", "0.3")))
    return JsonResponse({"status": "ok"})


async def item_events(request: HttpRequest) -> StreamingHttpResponse:
    """Server-sent events: the number of items now, then each time it changes (``limit`` events)."""
    limit = int(request.GET.get("limit", "2"))

    async def stream() -> AsyncIterator[str]:
        last = await Item.objects.acount()
        yield f"data: {last}\n\n"
        for _ in range(limit - 1):
            while (count := await Item.objects.acount()) == last:
                await asyncio.sleep(0.005)
            last = count
            yield f"data: {count}\n\n"

    return StreamingHttpResponse(stream(), content_type="text/event-stream")


def context_values() -> dict[str, str | None]:
    """What a request sees of the context: language, time zone, a third-party Local."""
    from django.utils import timezone, translation

    from tests.testapp.models import TENANT

    return {
        "language": translation.get_language(),
        "timezone": timezone.get_current_timezone_name(),
        "tenant": getattr(TENANT, "name", None),
    }


async def context_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(context_values())


def sync_context_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(context_values())
