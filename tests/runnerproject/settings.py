"""A user's project, as the runner tests run it: the library's test app, its own databases."""

from tests.dbconfig import databases
from tests.settings import *  # noqa: F403

DATABASES = databases("runner")
