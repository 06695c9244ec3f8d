import asyncio

from django.http import JsonResponse
from django.test import override_settings
from django.urls import path

from djasynctest import AsyncTestCase
from tests.docs_examples.health_blocking import check_payment_provider


async def health(request):
    payments = await asyncio.to_thread(check_payment_provider)
    return JsonResponse({"payments": payments})


urlpatterns = [path("health/", health)]


@override_settings(ROOT_URLCONF=__name__)
class HealthTests(AsyncTestCase):
    async def test_health(self):
        response = await self.async_client.get("/health/")
        self.assertEqual(response.json(), {"payments": "up"})
