"""Database settings for the test suites, chosen by DJASYNCTEST_DB.

- ``sqlite`` (default): SQLite, test databases in memory;
- ``sqlite-file``: SQLite, test databases in files;
- ``postgres``: PostgreSQL through psycopg 3 (``PGHOST``, ``PGPORT``,
  ``PGUSER``, ``PGPASSWORD`` as libpq reads them; defaults suit a local server);
- ``postgres-async-backend``: the same through django-async-backend's engine
  (its app installed too); with ``DJASYNCTEST_DB_POOL=1``, through connection
  pools (``OPTIONS["pool"]``), Django's and django-async-backend's.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

BACKEND = os.environ.get("DJASYNCTEST_DB", "sqlite")
ALIASES = ("default", "other")


def databases(prefix: str) -> dict[str, dict[str, Any]]:
    # Processes that run at the same time (pytest-xdist workers and the runs
    # they start) must not share a database name.
    prefix += os.environ.get("DJASYNCTEST_NAME_SUFFIX", "")
    if BACKEND in ("postgres", "postgres-async-backend"):
        engine = (
            "django_async_backend.db.backends.postgresql"
            if BACKEND == "postgres-async-backend"
            else "django.db.backends.postgresql"
        )
        return {
            alias: {
                "ENGINE": engine,
                "NAME": f"{prefix}_{alias}",
                "HOST": os.environ.get("PGHOST", "localhost"),
                "PORT": os.environ.get("PGPORT", "5432"),
                "USER": os.environ.get("PGUSER", "djasynctest"),
                "PASSWORD": os.environ.get("PGPASSWORD", "djasynctest"),
                "OPTIONS": {"pool": True} if os.environ.get("DJASYNCTEST_DB_POOL") else {},
            }
            for alias in ALIASES
        }
    if BACKEND == "sqlite-file":
        folder = tempfile.gettempdir()
        return {
            alias: {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(folder, f"{prefix}_{alias}.sqlite3"),
                "TEST": {
                    "NAME": os.path.join(folder, f"test_{prefix}_{alias}_{os.getpid()}.sqlite3")
                },
            }
            for alias in ALIASES
        }
    if BACKEND == "sqlite":
        return {
            alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{prefix}_{alias}.sqlite3"}
            for alias in ALIASES
        }
    msg = (
        f"DJASYNCTEST_DB={BACKEND!r} is not one of 'sqlite', 'sqlite-file', 'postgres', "
        "'postgres-async-backend'."
    )
    raise ValueError(msg)
