"""Browser tests: Debian's Chromium driven by Playwright against live_server + real qcluster.

No browser download ever: Playwright's bundled driver talks to /usr/bin/chromium. A missing
Chromium is a failure with the install command, not a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User

from tests.factories import UserFactory

# Playwright's sync API runs an event loop in the test thread; Django's ORM must be allowed there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("TUNIX_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("TUNIX_SCREENSHOT_DIR", "test-results/screenshots"))
PASSWORD = "e2e-password-123"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(or point TUNIX_CHROMIUM at it). Browser tests do not download browsers."
        )
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--disable-gpu", "--disable-quic", "--disable-dev-shm-usage"],
    }


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def fast_polling(settings: Any) -> None:
    settings.TUNIX_POLL_SECONDS = 1


@pytest.fixture
def engineer(transactional_db: None) -> User:
    user = UserFactory(username="engineer", password=PASSWORD)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="runs",
            codename__in=["add_tunixrun", "add_dataset", "view_tunixrun"],
        )
    )
    return user


@pytest.fixture
def logged_in(page: Any, live_server: Any, engineer: User, fast_polling: None) -> Any:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(engineer.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    return page
