"""Settings for the example project: PostgreSQL through Django's psycopg 3 backend.

``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/shop``) names the
database. conveyor uses the same database (``CONVEYOR_URL``, by default the same URL) in
its own schema, ``conveyor``, so a job can be part of a Django transaction.
"""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = ["orders"]
MIDDLEWARE: list[str] = []  # a real project keeps its session, CSRF and auth middleware
ROOT_URLCONF = "shop.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/shop")
_db = urlsplit(DATABASE_URL)
DATABASES = {
    "default": {
        # With psycopg 3 installed (conveyor[postgres]), Django uses it: the connection
        # conveyor joins is then a psycopg.Connection.
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
    }
}

# The store for conveyor: the same database, so `connection=` can join Django's transaction.
CONVEYOR_URL = os.environ.get("CONVEYOR_URL", DATABASE_URL)
