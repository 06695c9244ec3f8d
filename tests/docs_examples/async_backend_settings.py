# settings.py: django-async-backend's engine for the database, and its app.
import os

DATABASES = {
    "default": {
        # Django's PostgreSQL backend for sync code, and async connections beside it.
        "ENGINE": "django_async_backend.db.backends.postgresql",
        "NAME": os.environ.get("POSTGRES_DB", "shop"),
        "HOST": os.environ.get("POSTGRES_HOST", "localhost"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "USER": os.environ.get("POSTGRES_USER", "shop"),
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", "shop"),
    },
}

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "orders",
    # Gives every model an async_objects manager and async_save(): no mixin to add.
    "django_async_backend",
]
