"""Registry writes are atomic under real concurrent requests: a real gunicorn (two processes,
eight threads each) on the PostgreSQL test database, requests released together by a barrier.
Concurrent promotions of different runs to one model get distinct numbers 1..n and none fails;
concurrent promotions of the same content end in one version; concurrent alias moves leave a
move log in which each move starts where the one before it ended."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from runs.models import AliasMove, ModelAlias, ModelVersion, RegisteredModel, RunExport, RunMode
from tests.factories import DatasetFactory, TunixRunFactory, UserFactory
from tests.support.clusters import database_url, wait_for
from tests.test_gunicorn import free_port

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.processes,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]

REPO = Path(__file__).resolve().parent.parent
PROMOTIONS = 8


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The production web process (gunicorn with its threaded worker) on the test database."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "TUNIX_DATASETS_ROOT": str(settings.TUNIX_DATASETS_ROOT),
        "TUNIX_ARTIFACTS_ROOT": str(settings.TUNIX_ARTIFACTS_ROOT),
        # Two shared cores: a burst must be served, not shed, whatever else the machine does.
        "TUNIX_WEB_MAX_QUEUE_MS": "60000",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "gunicorn.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:tunix_rt.gunicorn_conf",
            "--workers",
            "2",
            "--threads",
            str(PROMOTIONS),
            "--bind",
            f"127.0.0.1:{port}",
            "tunix_rt.wsgi",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log_path.read_text()
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
            return True
        return False

    try:
        wait_for(answers, 60, what=f"gunicorn on {base}", interval=0.2)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def token() -> str:
    user = UserFactory()
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="runs",
            codename__in=["view_tunixrun", "add_modelversion", "change_registeredmodel"],
        )
    )
    return str(Token.objects.create(user=User.objects.get(pk=user.pk)).key)


def completed_export(sha256: str | None = None) -> RunExport:
    run = TunixRunFactory(
        completed=True,
        mode=RunMode.LOCAL,
        dataset=DatasetFactory(),
        model_id="tunix-rt/tiny-llama3",
        metrics={"train_loss": 1.0},
    )
    return RunExport.objects.create(
        run=run,
        step=8,
        status="completed",
        sha256=sha256 or hashlib.sha256(str(run.id).encode()).hexdigest(),
        size_bytes=10,
        completed_at=timezone.now(),
    )


def call(base: str, token: str, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"null")


def together(count: int, one: Any) -> list[tuple[int, Any]]:
    """``one(i)`` for each i on its own thread, every request released at the same instant."""
    barrier = threading.Barrier(count)

    def released(i: int) -> tuple[int, Any]:
        barrier.wait()
        result: tuple[int, Any] = one(i)
        return result

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(released, range(count)))


def test_concurrent_promotions_of_different_runs_get_numbers_1_to_n_and_none_fails(
    server: str, token: str
) -> None:
    exports = [completed_export() for _ in range(PROMOTIONS)]

    answers = together(
        PROMOTIONS,
        lambda i: call(
            server,
            token,
            "POST",
            "/api/tunix/registry/models/race/versions",
            {"run_id": str(exports[i].run_id), "export_id": str(exports[i].id)},
        ),
    )

    assert [status for status, _ in answers] == [201] * PROMOTIONS, answers
    assert sorted(body["number"] for _, body in answers) == list(range(1, PROMOTIONS + 1))
    # Each export became the version its answer named: no two requests shared a number.
    stored = ModelVersion.objects.values_list("export_id", "number")
    assert {body["export_id"]: body["number"] for _, body in answers} == {
        str(export_id): number for export_id, number in stored
    }
    assert RegisteredModel.objects.get(name="race").latest_number == PROMOTIONS
    assert ModelVersion.objects.count() == PROMOTIONS


def test_concurrent_promotions_of_the_same_content_end_in_one_version(
    server: str, token: str
) -> None:
    same = [completed_export(sha256="c" * 64) for _ in range(4)]

    answers = together(
        4,
        lambda i: call(
            server,
            token,
            "POST",
            "/api/tunix/registry/models/same/versions",
            {"run_id": str(same[i].run_id), "export_id": str(same[i].id)},
        ),
    )

    assert sorted(status for status, _ in answers) == [200, 200, 200, 201], answers
    assert {body["uri"] for _, body in answers} == {"models:/same/1"}
    assert ModelVersion.objects.filter(model__name="same").count() == 1
    assert RegisteredModel.objects.get(name="same").latest_number == 1  # no number was lost


def test_concurrent_alias_moves_all_land_and_log_an_unbroken_chain(server: str, token: str) -> None:
    for export in [completed_export() for _ in range(4)]:
        status, _ = call(
            server,
            token,
            "POST",
            "/api/tunix/registry/models/moving/versions",
            {"run_id": str(export.run_id), "export_id": str(export.id)},
        )
        assert status == 201
    targets = [1, 2, 3, 4, 1, 2, 3, 4]

    answers = together(
        len(targets),
        lambda i: call(
            server,
            token,
            "PUT",
            "/api/tunix/registry/models/moving/aliases/production",
            {"version": targets[i]},
        ),
    )

    assert all(status in (200, 201) for status, _ in answers), answers
    assert [status for status, _ in answers].count(201) == 1
    # Written under the model's lock: ids are in the order the moves happened.
    log = list(AliasMove.objects.filter(alias="production").order_by("id"))
    assert log[0].from_number is None
    assert all(after.from_number == before.to_number for before, after in itertools.pairwise(log))
    assert ModelAlias.objects.get(name="production").version.number == log[-1].to_number
