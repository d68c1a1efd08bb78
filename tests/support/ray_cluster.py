"""A real local Ray head for the Ray backend's tests and bench, in a network namespace of its own.

Ray binds to the machine's non-loopback address whatever it is told, and its GCS and raylets
listen on every interface (../shared/notes: ray-on-one-machine). So the head, and every process
that talks to it (the qcluster under test, the probes below), run inside a private network
namespace where loopback is the only interface: a holder process made with `unshare -n` owns
it, the others join it with `nsenter --net`. This process stays outside, on the host's network,
and reaches the database as usual; processes inside reach PostgreSQL over its Unix socket
(database_url_inside), which crosses namespaces.

Needs root (unshare, nsenter), ip(8) and Ray (requirements-ray.txt): missing_reason says what is
missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.clusters import pid_alive

DASHBOARD_PORT = 8265
ADDRESS = f"http://127.0.0.1:{DASHBOARD_PORT}"
POSTGRES_SOCKET_DIR = "/var/run/postgresql"


def missing_reason() -> str | None:
    """None when a Ray head can be started here, else what is missing."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (make install-ray)"
    if os.geteuid() != 0:
        return "the Ray tests make a private network namespace, which needs root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux, iproute2)"
    return None


def database_url_inside(url: str) -> str:
    """The same database as seen from inside the namespace: PostgreSQL over its Unix socket
    (127.0.0.1 there is the namespace's own loopback); a SQLite file as it is."""
    if not url.startswith(("postgres://", "postgresql://")):
        return url
    scheme, _, rest = url.partition("://")
    credentials, _, location = rest.rpartition("@")
    name = location.partition("/")[2]
    socket_dir = POSTGRES_SOCKET_DIR.replace("/", "%2F")
    return f"{scheme}://{credentials + '@' if credentials else ''}{socket_dir}/{name}"


class RayHead:
    """A Ray head with the job server, in a private network namespace; ``stop`` leaves
    nothing behind (processes, the namespace, Ray's session files)."""

    def __init__(self, *, num_cpus: int = 2, env: dict[str, str] | None = None) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # socket paths: short
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.netns = f"/proc/{self.holder.pid}/ns/net"
        self._wait_for_namespace()
        self.run(["ip", "link", "set", "lo", "up"])
        self.ray = str(Path(sys.executable).with_name("ray"))
        started = time.monotonic()
        self.run(
            [
                self.ray,
                "start",
                "--head",
                f"--dashboard-port={DASHBOARD_PORT}",
                "--dashboard-host=127.0.0.1",
                "--include-dashboard=true",
                f"--num-cpus={num_cpus}",
                "--num-gpus=0",
                "--disable-usage-stats",
                f"--temp-dir={self.temp_dir}",
            ],
            env=env,
            timeout=120,
        )
        self.start_seconds = time.monotonic() - started

    def _wait_for_namespace(self) -> None:
        """unshare makes the namespace before it runs sleep: wait until the holder's is new."""
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.readlink(self.netns) != own and self._holder_is_sleep():
                    return
            time.sleep(0.02)
        raise RuntimeError("unshare --net did not make a network namespace")

    def _holder_is_sleep(self) -> bool:
        return Path(f"/proc/{self.holder.pid}/cmdline").read_bytes().startswith(b"sleep")

    def inside(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def run(
        self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60
    ) -> str:
        done = subprocess.run(
            self.inside(argv),
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def python(self, code: str, *args: str) -> Any:
        """Run ``code`` with Ray's client inside the namespace; it prints one JSON value."""
        return json.loads(self.run([sys.executable, "-c", code, ADDRESS, *args]).strip())

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job the cluster knows, by submission id: status, entrypoint, exit code."""
        return dict(
            self.python(
                "import json, sys\n"
                "from ray.job_submission import JobSubmissionClient\n"
                "jobs = JobSubmissionClient(sys.argv[1]).list_jobs()\n"
                "print(json.dumps({j.submission_id: {'status': str(j.status), "
                "'entrypoint': j.entrypoint, 'exit_code': j.driver_exit_code, "
                "'metadata': j.metadata} for j in jobs if j.submission_id}))"
            )
        )

    def stop_job(self, job_id: str) -> None:
        self.python(
            "import json, sys\n"
            "from ray.job_submission import JobSubmissionClient\n"
            "print(json.dumps(JobSubmissionClient(sys.argv[1]).stop_job(sys.argv[2])))",
            job_id,
        )

    def processes(self) -> list[int]:
        """Every process in the namespace (the holder, Ray's, the jobs', qclusters)."""
        namespace = os.readlink(self.netns)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "net") == namespace:
                        found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Ends every process of the namespace, and only those: `ray stop` would end every
        Ray process on the machine, another head's too."""
        if self.holder.poll() is None:
            pids = [pid for pid in self.processes() if pid != self.holder.pid]
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
                    time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.holder.pid, signal.SIGKILL)
        self.holder.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
