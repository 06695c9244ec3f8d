from django.contrib import admin

from orders.models import Item, Order

admin.site.register(Item)
admin.site.register(Order)
