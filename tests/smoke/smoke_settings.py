"""The smallest project: what the release smoke test (nox -s release) runs against."""

SECRET_KEY = "smoke"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
