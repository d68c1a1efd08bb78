"""Real qcluster processes for fault tests: started, signalled and killed like on a host."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_TRAINER = REPO_ROOT / "tests" / "support" / "fake_trainer.py"


def database_url() -> str:
    """The URL of the database this test runs against (the test database, not the real one)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{db['NAME']}"


def cluster_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "TUNIX_DATASETS_ROOT": str(settings.TUNIX_DATASETS_ROOT),
        "TUNIX_ARTIFACTS_ROOT": str(settings.TUNIX_ARTIFACTS_ROOT),
        "TUNIX_TRAINER_COMMAND": json.dumps([sys.executable, str(FAKE_TRAINER)]),
        "FAKE_TRAINER_LOG": str(tmp_path / "trainer.log"),
        "TUNIX_HEARTBEAT_SECONDS": "1",
        "TUNIX_STALE_AFTER_SECONDS": "3",
        "TUNIX_REAPER_INTERVAL_SECONDS": "1",
        "TUNIX_ORPHAN_AFTER_SECONDS": "2",
        "TUNIX_SHUTDOWN_GRACE_SECONDS": "2",
        "TUNIX_KILL_GRACE_SECONDS": "1",
        "TUNIX_Q_POLL": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


class QCluster:
    """One `manage.py qcluster` in its own process group, logging to a file."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        argv = [sys.executable, str(REPO_ROOT / "manage.py"), "qcluster"]
        self.proc = subprocess.Popen(
            wrap(argv) if wrap is not None else argv,  # e.g. into a network namespace
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(
            lambda: "running" in self.log() and "Q Cluster" in self.log(),
            timeout,
            what=f"qcluster ready (log: {self.log_path})",
        )

    def terminate(self) -> None:
        """SIGTERM to the master only, as systemd KillMode=mixed does."""
        self.proc.send_signal(signal.SIGTERM)

    def kill_group(self) -> None:
        """SIGKILL the master and every process of its group: a host losing power."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_group()
        # Leftovers of the group (an orphaned sentinel) must not outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def wait_for(check: Callable[[], Any], timeout: float, *, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True if the pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_clusters(
    tmp_path: Path, count: int = 1, **env_overrides: str
) -> Iterator[list[QCluster]]:
    env = cluster_env(tmp_path, **env_overrides)
    clusters = [QCluster(env, tmp_path / f"qcluster-{i}.log") for i in range(count)]
    try:
        for cluster in clusters:
            cluster.wait_ready()
        yield clusters
    finally:
        for cluster in clusters:
            cluster.stop()
