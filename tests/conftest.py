"""Shared fixtures. The suite runs once on SQLite and once on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.support.clusters import FAKE_TRAINER, QCluster, start_clusters

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DATASET = REPO_ROOT / "runs" / "demo" / "tunix-demo-v1.jsonl"
E2E_DIR = Path(__file__).resolve().parent / "e2e"


def _database_url() -> str:
    return os.environ.get("DATABASE_URL", "")


def _postgres_unreachable_reason() -> str | None:
    """None if the configured PostgreSQL answers, else why not."""
    import psycopg

    url = _database_url()
    try:
        # Connect to the server's maintenance database: the test database does not exist yet.
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {url} is not reachable ({exc.__class__.__name__}: {exc})"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs PostgreSQL")
    config.addinivalue_line(
        "markers",
        "database_independent: touches no database (the trainer in its own process), so "
        "`make test` runs it in the PostgreSQL pass only",
    )
    config._tunix_pg_skip = None  # type: ignore[attr-defined]
    if _database_url().startswith(("postgres://", "postgresql://")):
        reason = _postgres_unreachable_reason()
        if reason and os.environ.get("TUNIX_REQUIRE_POSTGRES") == "1":
            raise pytest.UsageError(f"{reason}; TUNIX_REQUIRE_POSTGRES=1 makes this a failure")
        config._tunix_pg_skip = reason  # type: ignore[attr-defined]


# Tiers (make test-fast deselects them): a test that uses one of these fixtures is marked
# without anyone remembering to. Tests that start processes in their own code carry the marker
# themselves, and _unmarked_tests_start_no_process fails those that do not.
TIER_FIXTURES = {
    # tunix_runtime: the Tunix stack (JAX) takes seconds to load, and most of its users train.
    "processes": {"clusters", "cluster_factory", "live_server", "tunix_runtime"},
    "browser": {"page", "context"},  # pytest-playwright's
    "fuzz": {"case"},  # schemathesis' generated request
}


def _tier_markers(item: pytest.Item) -> list[str]:
    from hypothesis import is_hypothesis_test

    fixtures = set(getattr(item, "fixturenames", ()))
    tiers = [tier for tier, names in TIER_FIXTURES.items() if fixtures & names]
    if E2E_DIR in item.path.parents and "browser" not in tiers:
        tiers.append("browser")  # whatever Playwright fixture it starts from
    if is_hypothesis_test(getattr(item, "obj", None)) and "fuzz" not in tiers:
        tiers.append("fuzz")
    return tiers


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    pg_skip = config._tunix_pg_skip  # type: ignore[attr-defined]
    on_postgres = _database_url().startswith(("postgres://", "postgresql://"))
    for item in items:
        for tier in _tier_markers(item):
            item.add_marker(tier)
        if pg_skip:
            item.add_marker(pytest.mark.skip(reason=pg_skip))
        elif not on_postgres and item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: this pass runs on SQLite"))


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test not marked ``processes`` (or ``browser``) that starts a process fails: the fast
    tier stays fast, and the marker cannot be forgotten. Every subprocess (run, Popen, asyncio's
    and the executor's) goes through Popen.__init__."""
    if request.node.get_closest_marker("processes") or request.node.get_closest_marker("browser"):
        return
    import subprocess

    def refuse(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        # pytest.fail raises a BaseException: code under test that catches Exception and
        # records a failed run does not swallow it.
        pytest.fail(f"starts a process ({args!r}) without @pytest.mark.processes")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(autouse=True)
def _isolated_roots(settings: Any, tmp_path: Path) -> None:
    """Every test gets its own datasets, artifacts and models directories, and no cached
    tokens."""
    from runs.api.authentication import clear_cache

    settings.TUNIX_DATASETS_ROOT = tmp_path / "datasets"
    settings.TUNIX_ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.TUNIX_MODELS_DIR = tmp_path / "models"
    clear_cache()


@pytest.fixture
def tunix_runtime() -> None:
    """Tests that train for real need google-tunix (make install-tunix). Without it they
    skip, unless TUNIX_REQUIRE_TRAINING=1 (CI) makes that a failure."""
    import importlib.util

    if importlib.util.find_spec("tunix") is None:
        reason = "google-tunix is not installed (make install-tunix)"
        if os.environ.get("TUNIX_REQUIRE_TRAINING") == "1":
            pytest.fail(f"{reason}; TUNIX_REQUIRE_TRAINING=1 makes this a failure")
        pytest.skip(reason)


@pytest.fixture
def user(db: None) -> User:
    """A team member who reads everyone's runs (runs.view_tunixrun) and launches nothing."""
    member = UserFactory()
    member.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="view_tunixrun")
    )
    return User.objects.get(pk=member.pk)  # fresh instance: permission cache is per object


@pytest.fixture
def web(operator: User) -> Client:
    """The pages as an operator sees them, logged in through a session."""
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def operator(db: None) -> User:
    """A user allowed to create runs, upload datasets and read every run."""
    member = UserFactory()
    member.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="runs",
            codename__in=["add_tunixrun", "add_dataset", "view_tunixrun"],
        )
    )
    return User.objects.get(pk=member.pk)  # fresh instance: permission cache is per object


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def operator_client(operator: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def viewer_client(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def demo_dataset(db: None) -> Any:
    from runs import services

    with DEMO_DATASET.open("rb") as handle:
        return services.dataset_import(key="tunix-demo-v1", source=handle)


@pytest.fixture
def jsonl() -> Callable[..., bytes]:
    """Build JSONL bytes from records (dicts are dumped, strings used as raw lines)."""
    import json

    def build(*records: Any) -> bytes:
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        return ("\n".join(lines) + "\n").encode()

    return build


@pytest.fixture
def clusters(
    tmp_path: Path, demo_dataset: Any, settings: Any
) -> Iterator[Callable[..., list[QCluster]]]:
    """Start real `manage.py qcluster` processes on the test database; stopped at teardown.
    Their trainer is the fake one (unless a test's env says otherwise), and so is the test
    process's, so runs it submits pass the same model check."""
    settings.TUNIX_TRAINER_COMMAND = [sys.executable, str(FAKE_TRAINER)]
    started: list[Iterator[list[QCluster]]] = []

    def start(count: int = 1, **env: str) -> list[QCluster]:
        group = start_clusters(tmp_path, count, **env)
        started.append(group)
        return next(group)

    yield start
    for group in started:
        next(group, None)  # runs the generator's cleanup: stop every cluster
