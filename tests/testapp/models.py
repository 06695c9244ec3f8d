from __future__ import annotations

from asgiref.local import Local
from django.db import models

#: A third-party Local, as a multi-tenant app keeps its current tenant.
TENANT = Local()


class Item(models.Model):
    name = models.CharField(max_length=100, unique=True)
    price = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    user = models.ForeignKey("auth.User", null=True, on_delete=models.SET_NULL)


class Tag(models.Model):
    """Has a row made by a data migration, for serialized_rollback."""

    name = models.CharField(max_length=100)
