"""The test project's ASGI application with channels: HTTP to Django, WebSockets to consumers."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

from tests.testapp.consumers import ItemsConsumer

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": AuthMiddlewareStack(URLRouter([path("ws/items/", ItemsConsumer.as_asgi())])),
    }
)
