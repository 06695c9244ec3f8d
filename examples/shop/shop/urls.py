from django.contrib import admin
from django.urls import path
from orders import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("items/", views.item_list, name="item-list"),
    path("orders/", views.orders, name="orders"),
    path("orders/events/", views.order_events, name="order-events"),
    path("health/", views.health, name="health"),
]
