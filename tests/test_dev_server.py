"""The development web server on PostgreSQL holds a bounded number of database connections
under concurrent load: real servers, real concurrent requests, connections counted in
pg_stat_activity.

`make run` starts the Procfile's web command (gunicorn: a fixed pool of threads, each keeping
one connection). Django's runserver, started by hand, serves every request on a new thread and
never closes that thread's connection; it runs with connections closed after each request."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from tests.support.clusters import database_url, wait_for
from tests.test_gunicorn import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

REPO = Path(__file__).resolve().parent.parent
WEB_PROCESSES = 2
WEB_THREADS = 4


def procfile_command(name: str) -> str:
    """The Procfile's command for ``name``, read as `make run`'s honcho reads it."""
    from honcho.environ import parse_procfile

    command: str = parse_procfile((REPO / "Procfile").read_text()).processes[name]
    return command


class Connections:
    """Counts the server's connections (tagged with its application_name) every few
    milliseconds, from a connection of its own to the maintenance database."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.peak = 0
        self._stop = threading.Event()
        self._conn = psycopg.connect(
            database_url().rsplit("/", 1)[0] + "/postgres", autocommit=True
        )
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.tag]
        ).fetchone()
        return int(row[0]) if row else 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def __enter__(self) -> Connections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.now())

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def start_server(
    transactional_db: None, tmp_path: Path
) -> Iterator[Callable[[str], tuple[str, Connections]]]:
    """Start a shell command as a web server on the test database (as honcho starts the
    Procfile's lines), with DEBUG on as `make run` has it."""
    started: list[tuple[subprocess.Popen[bytes], Connections, Any]] = []

    def start(command: str) -> tuple[str, Connections]:
        port = free_port()
        tag = f"tunix-dev-server-{port}"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
            "DATABASE_URL": f"{database_url()}?application_name={tag}",
            "DEBUG": "1",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "WEB_CONCURRENCY": str(WEB_PROCESSES),
            "TUNIX_WEB_THREADS": str(WEB_THREADS),
            "TUNIX_DATASETS_ROOT": str(settings.TUNIX_DATASETS_ROOT),
            "TUNIX_ARTIFACTS_ROOT": str(settings.TUNIX_ARTIFACTS_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("SECRET_KEY", None)  # DEBUG's development key, as under `make run`
        log = (tmp_path / f"server-{port}.log").open("wb")
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        connections = Connections(tag)
        started.append((proc, connections, log))
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                return True
            return False

        wait_for(answers, 60, what=f"the server on {base}", interval=0.2)
        return base, connections

    yield start
    for proc, connections, log in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        connections.close()
        log.close()


def status_of(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def parallel_readyz(base: str, count: int) -> list[int]:
    """``count`` requests released at the same instant, each on a connection of its own."""
    barrier = threading.Barrier(count)

    def one(_: int) -> int:
        barrier.wait()
        return status_of(urllib.request.Request(f"{base}/readyz"))

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_make_runs_web_process_holds_at_most_one_connection_per_thread_under_load(
    start_server: Callable[[str], tuple[str, Connections]], operator: Any, demo_dataset: Any
) -> None:
    base, connections = start_server(procfile_command("web"))
    token = Token.objects.create(user=operator).key
    body = json.dumps({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"})

    def submit(_: int) -> int:
        return status_of(
            urllib.request.Request(
                f"{base}/api/tunix/run?mode=async",
                data=body.encode(),
                method="POST",
                headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )
        )

    with connections, ThreadPoolExecutor(8) as submitters:
        submits = submitters.map(submit, range(200))  # 200 submits from 8 threads...
        probes = parallel_readyz(base, 60)  # ...while 60 readiness probes arrive at once
        submitted = list(submits)

    # 503: not ready (no worker runs here) or shed under load; never an error.
    assert set(probes) <= {200, 503}, probes
    assert set(submitted) <= {202, 503}, submitted
    assert submitted.count(202) > 0
    bound = WEB_PROCESSES * WEB_THREADS
    assert 0 < connections.peak <= bound, f"{connections.peak} connections, bound {bound}"
    assert connections.now() <= bound


def test_runserver_closes_each_requests_connection(
    start_server: Callable[[str], tuple[str, Connections]],
) -> None:
    base, connections = start_server(
        f"{sys.executable} manage.py runserver --noreload 127.0.0.1:$PORT"
    )
    with connections:
        probes = parallel_readyz(base, 60)
    assert set(probes) <= {200, 503}, probes
    # At most one per request in flight, and none once every request is answered.
    assert connections.peak <= 60
    wait_for(lambda: connections.now() == 0, 10, what="runserver's connections to close")
