from __future__ import annotations

from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("items/", views.items),
    path("orders/", views.orders),
    path("sync-items/", views.sync_items),
]
