import os

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("POSTGRES_DB", "shop"),
        "HOST": os.environ.get("POSTGRES_HOST", "localhost"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "USER": os.environ.get("POSTGRES_USER", "shop"),
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", "shop"),
        "OPTIONS": {
            # A query stuck on a lock fails after 10 s instead of hanging the CI job.
            "options": "-c lock_timeout=10s -c statement_timeout=60s",
        },
    },
}

# Every test may take 120 s at most; a query that hangs is interrupted then.
DJASYNCTEST = {"TIMEOUT": 120}
