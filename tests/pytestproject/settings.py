"""A user's pytest project, as tests/test_pytest_plugin.py runs it: the test app."""

from tests.dbconfig import databases
from tests.settings import *  # noqa: F403

DATABASES = databases("pytestplugin")
ROOT_URLCONF = "tests.pytestproject.urls"
