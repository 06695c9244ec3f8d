"""Settings of the library's own test suite."""

from __future__ import annotations

from tests.dbconfig import BACKEND, databases

SECRET_KEY = "djasynctest-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
DATABASES = databases("djasynctest")
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "tests.testapp",
]
if BACKEND == "postgres-async-backend":
    INSTALLED_APPS.append("django_async_backend")
    # With DJASYNCTEST_DB_POOL: its warning about pools under WSGI concerns no test here.
    ASYNC_BACKEND_DISABLE_POOL_WARNING = True
STATIC_URL = "static/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.testapp.urls"
ASGI_APPLICATION = "tests.asgi.application"  # channels' live server, in the benchmark
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth"]},
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django 6.1 moves email configuration to MAILERS (ignored by older versions).
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}}
