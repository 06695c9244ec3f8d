from __future__ import annotations

from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("items/", views.items),
    path("async-backend-items/", views.async_backend_items),
    path("orders/", views.orders),
    path("sync-items/", views.sync_items),
    path("items/create/", views.create_item),
    path("items/page/", views.item_template),
    path("items/form/", views.item_form),
    path("go/", views.go_to_items),
    path("health/slow/", views.slow_health),
    path("health/slow-sync/", views.slow_sync_health),
    path("items/events/", views.item_events),
    path("context/", views.context_view),
    path("sync-context/", views.sync_context_view),
]
