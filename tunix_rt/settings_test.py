"""Test settings: the real settings with test-only secrets and a fast password hasher.

Database selection still comes from DATABASE_URL, so the same suite runs on SQLite and on
PostgreSQL (see the Makefile's test-sqlite and test-postgres targets).
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault(
    "TUNIX_VAR_DIR", os.path.join(tempfile.gettempdir(), f"tunix-rt-test-{os.getuid()}")
)

from tunix_rt.settings import *  # noqa: F403
from tunix_rt.settings import DATABASES, VAR_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The file SQLite database (not :memory:) lets worker subprocesses share it with the tests.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(os.environ["TUNIX_VAR_DIR"], "test.sqlite3")
    }

# Static files are served by the test server from the finders; an empty root keeps whitenoise quiet.
STATIC_ROOT = VAR_DIR / "static-root"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
