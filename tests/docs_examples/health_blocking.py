import time

from django.http import JsonResponse
from django.test import override_settings
from django.urls import path

from djasynctest import AsyncTestCase


def check_payment_provider():
    time.sleep(0.25)  # stands for a sync HTTP call, such as requests.get(url)
    return "up"


async def health(request):
    return JsonResponse({"payments": check_payment_provider()})


urlpatterns = [path("health/", health)]


@override_settings(ROOT_URLCONF=__name__)
class HealthTests(AsyncTestCase):
    async def test_health(self):
        response = await self.async_client.get("/health/")
        self.assertEqual(response.json(), {"payments": "up"})
