"""Tunix RT's performance baseline against PostgreSQL. Writes bench/results/<stamp>.json.

    .venv/bin/python bench/run.py                      # full run, about ten minutes
    .venv/bin/python bench/run.py --sizes 10000 --quick

It creates (and drops) its own database, tunix_rt_bench, on BENCH_PG (default
postgres://postgres@127.0.0.1:5432), serves the app with gunicorn, and runs qcluster workers, all
on this machine. Numbers are only comparable on the same hardware; the server setup is recorded
next to each number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench import wrk  # noqa: E402
from bench.loadgen import closed_loop, open_loop, request  # noqa: E402

PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
# Every bench (run, ab, soak, training) resets this database and serves on this port: two at
# once on one machine need their own BENCH_DB, BENCH_PORT and BENCH_VAR.
DB_NAME = os.environ.get("BENCH_DB", "tunix_rt_bench")
PORT = int(os.environ.get("BENCH_PORT", "8765"))
BASE = f"http://127.0.0.1:{PORT}"
VAR = Path(os.environ.get("BENCH_VAR", "/tmp/tunix-rt-bench"))
GUNICORN_WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", str(os.cpu_count() or 2)))
GUNICORN_THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", "4"))
OVERLOAD_RATE = float(os.environ.get("BENCH_OVERLOAD_RATE", "700"))
ENV = {
    **os.environ,
    "DATABASE_URL": f"{PG}/{DB_NAME}",
    "SECRET_KEY": "bench-secret-key",
    "DEBUG": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "TUNIX_VAR_DIR": str(VAR),
    "LOG_LEVEL": "WARNING",
    "STATIC_ROOT": str(VAR / "static"),
    "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
    "TUNIX_Q_POLL": os.environ.get("BENCH_Q_POLL", "0.2"),
    # /api/bench/floor: a view that does no database work, the reference every maximum is
    # reported against (off unless set).
    "TUNIX_BENCH_FLOOR": "1",
}
FLOOR_PATH = "/api/bench/floor"
os.environ.update(ENV)


def write_report(
    report: dict[str, Any], *, prefix: str = "", stamp: datetime | None = None
) -> Path:
    """bench/results/<prefix><stamp>.json, where docs/PERFORMANCE_BASELINE.md links it."""
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{prefix}{stamp or datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {path}")
    return path


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=ENV, check=True)


def reset_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run(["rm", "-rf", str(VAR)], check=True)
    manage("migrate", "--noinput", "-v0")
    manage("collectstatic", "--noinput", "-v0")
    manage("import_dataset", "runs/demo/tunix-demo-v1.jsonl", "--key", "tunix-demo-v1")


def setup_django() -> str:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_superuser("bench", password="bench-password-123")
    return str(Token.objects.create(user=user).key)


def seed(total: int) -> int:
    """Top the table up to ``total`` finished runs, spread over the past, in one SQL statement."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs_tunixrun")
        have = int(cur.fetchone()[0])
        missing = total - have
        if missing <= 0:
            return have
        cur.execute("SELECT id FROM runs_dataset LIMIT 1")
        dataset_id = cur.fetchone()[0]
        cur.execute(
            """
            INSERT INTO runs_tunixrun (id, dataset_id, model_id, mode, status, config, queued_at,
                started_at, completed_at, exit_code, stdout, stderr, error_reason, error_message,
                attempt, worker_id, heartbeat_at, timeout_seconds, client_request_id,
                request_fingerprint, created_by_id, progress, loss_curve, metrics, submitted_async,
                series, algorithm)
            SELECT gen_random_uuid(), %s,
                (ARRAY['google/gemma-3-270m','google/gemma-3-1b','Qwen/Qwen2.5-0.5B'])[1 + i %% 3],
                CASE WHEN i %% 5 = 0 THEN 'local' ELSE 'dry-run' END,
                CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'completed' END,
                '{"batch_size": 8, "num_epochs": 3}'::jsonb,
                now() - interval '1 hour' - (i * interval '3 second'),
                now() - interval '1 hour' - (i * interval '3 second') + interval '100 ms',
                now() - interval '1 hour' - (i * interval '3 second') + interval '1 second',
                CASE WHEN i %% 10 = 0 THEN 1 ELSE 0 END,
                'Dry run: OK', '',
                CASE WHEN i %% 10 = 0 THEN 'nonzero_exit' ELSE '' END, '',
                1, 'worker:bench:1', NULL, NULL, NULL, '', NULL, '{}', '[]', '{}', false,
                '{}', 'sft'
            FROM generate_series(%s, %s) AS i
            """,
            [dataset_id, have + 1, total],
        )
        cur.execute("ANALYZE runs_tunixrun")
    return total


ACCESS_LOG = VAR / "access.log"


class Gunicorn:
    """The production web setup (tunix_rt/gunicorn_conf.py), bound to the bench port, with an
    access log of each request's server time (gunicorn's %(D)s, microseconds)."""

    def __init__(self, *, repo: Path = REPO, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:tunix_rt.gunicorn_conf",
                "--workers",
                str(GUNICORN_WORKERS),
                "--threads",
                str(GUNICORN_THREADS),
                "--bind",
                f"127.0.0.1:{PORT}",
                "--log-level",
                "warning",
                "--access-logfile",
                str(ACCESS_LOG),
                "--access-logformat",
                "%(D)s %(s)s %(U)s",
                "tunix_rt.wsgi",
            ],
            cwd=repo,
            env={**ENV, **(env or {})},
            start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                status, _, _ = asyncio.run(request(f"{BASE}/healthz"))
                if status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


class Clusters:
    def __init__(self, count: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=REPO,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(count)
        ]

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def rss_mib(pids: list[int]) -> list[float]:
    """Resident memory of the given processes and all their descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True)
    rows = [tuple(int(x) for x in line.split()) for line in out.stdout.splitlines() if line.strip()]
    children: dict[int, list[int]] = {}
    rss = {}
    for pid, ppid, kib in rows:
        children.setdefault(ppid, []).append(pid)
        if kib:  # 0: a process that is exiting
            rss[pid] = kib
    found: list[float] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in rss:
            found.append(round(rss[pid] / 1024, 1))
        stack += children.get(pid, [])
    return found


def log_offset() -> int:
    return ACCESS_LOG.stat().st_size if ACCESS_LOG.exists() else 0


def server_times(since: int, path: str) -> dict[str, Any]:
    """Percentiles of the server's own time (request read to response written) for ``path``
    in the access log lines written after offset ``since``: the latency without the client."""
    with ACCESS_LOG.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    micros = sorted(
        int(parts[0]) for parts in (line.split() for line in lines) if parts[2:3] == [path]
    )
    if not micros:
        return {}

    def pct(p: float) -> float:
        return round(micros[min(len(micros) - 1, int(p / 100 * len(micros)))] / 1000, 2)

    return {
        "requests": len(micros),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(micros[-1] / 1000, 2),
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def max_throughput(
    url: str,
    *,
    headers: dict[str, str],
    method: str = "GET",
    body: bytes = b"",
    repeats: int = 3,
    seconds: float = 6,
    floor: bool = True,
) -> dict[str, Any]:
    """Closed loop, 8 connections, ``repeats`` times; the median run by throughput.

    With keep-alive (wrk) the kernel spreads the 8 connections over the web processes at
    random, so one run can land 6 on one process and 2 on the other: repeats show the spread.

    Each run is preceded by one of the floor (/api/bench/floor, same headers, same client): the
    answer's ``floor_ratio`` is the median of each run's r/s over the floor's just before it.
    Absolute numbers drift by up to 1.4x on a shared machine; a ratio measured a few seconds
    apart does not.
    """
    runs: list[dict[str, Any]] = []
    floors: list[float] = []
    ratios: list[float] = []
    for _ in range(repeats):
        if floor:
            floor_rps = float(_closed_loop(BASE + FLOOR_PATH, headers, "GET", b"", seconds)["rps"])
            floors.append(floor_rps)
        runs.append(_closed_loop(url, headers, method, body, seconds))
        if floor:
            ratios.append(float(runs[-1]["rps"]) / floor_rps if floor_rps else 0.0)
    each = [r["rps"] for r in runs]
    runs.sort(key=lambda r: r["rps"])
    median = dict(runs[len(runs) // 2])
    median["rps_each_run"] = each
    if floor:
        median["floor_rps_each_run"] = floors
        median["floor_ratio_each_run"] = [round(r, 3) for r in ratios]
        median["floor_rps"] = statistics.median(floors)
        median["floor_ratio"] = round(statistics.median(ratios), 3)
    return median


def _closed_loop(
    url: str, headers: dict[str, str], method: str, body: bytes, seconds: float
) -> dict[str, Any]:
    if wrk.available():
        return wrk.run(
            url, connections=8, duration=seconds, method=method, body=body, headers=headers
        )
    result = asyncio.run(
        closed_loop(
            url,
            connections=8,
            duration=seconds,
            method=method,
            headers=headers,
            body_for=(lambda i: body) if body else None,
        )
    ).summary()
    result["client"] = "bench/loadgen.py, 8 connections, one request each"
    return result


def list_benchmarks(token: str, size: int, quick: bool) -> dict[str, Any]:
    from django.db import connection

    duration = 10 if quick else 30
    url = f"{BASE}/api/tunix/runs?limit=20"
    out: dict[str, Any] = {"rows": size}
    asyncio.run(open_loop(url, rate=50, duration=2, headers=auth(token)))  # warm up
    # Pooled keep-alive connections, as API clients and browsers poll; then a new connection
    # per request, the worst case (every request pays TCP setup and gunicorn's accept).
    mark = log_offset()
    out["list_100rps"] = asyncio.run(
        open_loop(url, rate=100, duration=duration, headers=auth(token), keepalive=True)
    ).summary()
    out["list_100rps_server"] = server_times(mark, "/api/tunix/runs")
    out["list_100rps_new_conn"] = asyncio.run(
        open_loop(url, rate=100, duration=duration, headers=auth(token))
    ).summary()
    # The same client against /healthz (no database, ~0.3 ms of server time): the floor that
    # the client, loopback TCP and gunicorn add to every latency above.
    out["healthz_100rps"] = asyncio.run(
        open_loop(f"{BASE}/healthz", rate=100, duration=10, keepalive=True)
    ).summary()
    out["list_max_8conn"] = max_throughput(url, headers=auth(token))
    # A cursor 90 % of the way down the table: what "Older" gives after thousands of pages.
    with connection.cursor() as cur:
        cur.execute(
            "SELECT queued_at, id FROM runs_tunixrun ORDER BY queued_at DESC, id DESC "
            "OFFSET %s LIMIT 1",
            [int(size * 0.9)],
        )
        queued_at, run_id = cur.fetchone()
    import base64

    raw = json.dumps([queued_at.isoformat(), str(run_id)], separators=(",", ":"))
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    mark = log_offset()
    out["deep_cursor_100rps"] = asyncio.run(
        open_loop(
            f"{url}&cursor={cursor}",
            rate=100,
            duration=duration,
            headers=auth(token),
            keepalive=True,
        )
    ).summary()
    out["deep_cursor_100rps_server"] = server_times(mark, "/api/tunix/runs")
    out["deep_cursor_max_8conn"] = max_throughput(f"{url}&cursor={cursor}", headers=auth(token))
    out["offset_10000_max_8conn"] = max_throughput(
        f"{url}&offset=10000", headers=auth(token), repeats=1
    )
    return out


def enqueue_benchmark(token: str) -> dict[str, Any]:
    body = json.dumps({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}).encode()
    headers = {**auth(token), "Content-Type": "application/json"}
    return max_throughput(
        f"{BASE}/api/tunix/run?mode=async", method="POST", headers=headers, body=body
    )


def overload_benchmark(token: str) -> dict[str, Any]:
    """Open loop above capacity (new connection per request, as many small clients), with
    load shedding on (the default) and off. Requests a client would abandon after 30 s count
    as errors."""
    url = f"{BASE}/api/tunix/runs?limit=20"
    out: dict[str, Any] = {"rate": OVERLOAD_RATE, "seconds": 15}
    for label, env in (("shedding_on", {}), ("shedding_off", {"TUNIX_WEB_MAX_QUEUE_MS": "0"})):
        web = Gunicorn(env=env)
        try:
            out[label] = asyncio.run(
                open_loop(url, rate=OVERLOAD_RATE, duration=15, headers=auth(token))
            ).summary()
        finally:
            web.stop()
    return out


def status_benchmarks(token: str) -> dict[str, Any]:
    from runs.models import TunixRun

    run = TunixRun.objects.order_by("-queued_at").first()
    assert run is not None
    url = f"{BASE}/api/tunix/runs/{run.id}/status"
    _, headers, _ = asyncio.run(request(url, headers=auth(token)))
    etag = headers["etag"]
    return {
        "status_200_max_8conn": max_throughput(url, headers=auth(token)),
        "status_304_max_8conn": max_throughput(url, headers={**auth(token), "If-None-Match": etag}),
    }


def probe_benchmarks() -> dict[str, Any]:
    """The probes at full speed: /healthz (answered before any middleware) and /readyz (its
    database and queue checks; 503 here, as no worker runs during these measurements)."""
    return {
        "healthz_max_8conn": max_throughput(f"{BASE}/healthz", headers={}),
        "readyz_max_8conn": max_throughput(f"{BASE}/readyz", headers={}),
    }


def clear_pending() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("DELETE FROM django_q_ormq")
        cur.execute(
            "UPDATE runs_tunixrun SET status='cancelled', completed_at=now() "
            "WHERE status IN ('pending', 'running')"
        )


def drain_benchmark(clusters: int, runs: int = 2000) -> dict[str, Any]:
    from django.db.models import Max, Min

    from runs import services
    from runs.models import TunixRun

    clear_pending()
    created = [
        services.run_submit(
            user=None,
            request=services.RunRequest(
                dataset_key="tunix-demo-v1",
                model_id="google/gemma-3-270m",
                mode="dry-run",
                config={},
            ),
            enqueue=True,
        ).run.id
        for _ in range(runs)
    ]
    group = Clusters(clusters)
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            left = TunixRun.objects.filter(id__in=created[-1:], status="pending").exists() or (
                TunixRun.objects.filter(status__in=["pending", "running"]).exists()
            )
            if not left:
                break
            time.sleep(0.25)
        span = TunixRun.objects.filter(id__in=created).aggregate(
            first=Min("started_at"), last=Max("completed_at")
        )
        rss = rss_mib([p.pid for p in group.procs])
    finally:
        group.stop()
    done = TunixRun.objects.filter(id__in=created, status="completed").count()
    seconds = (span["last"] - span["first"]).total_seconds()
    return {
        "clusters": clusters,
        "workers_per_cluster": 2,
        "runs": runs,
        "completed": done,
        "seconds": round(seconds, 2),
        "runs_per_second": round(done / seconds, 1),
        "worker_rss_mib": rss,
    }


def pickup_benchmark(token: str, samples: int = 60) -> dict[str, Any]:
    from runs.models import TunixRun

    clear_pending()
    group = Clusters(1)
    time.sleep(4)  # the cluster is up and idle
    body = json.dumps({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}).encode()
    headers = {**auth(token), "Content-Type": "application/json"}
    pickups: list[float] = []
    try:
        for _ in range(samples):
            _, _, payload = asyncio.run(
                request(
                    f"{BASE}/api/tunix/run?mode=async", method="POST", headers=headers, body=body
                )
            )
            run_id = json.loads(payload)["run_id"]
            deadline = time.time() + 10
            while time.time() < deadline:
                run = TunixRun.objects.only("queued_at", "started_at").get(id=run_id)
                if run.started_at:
                    pickups.append((run.started_at - run.queued_at).total_seconds() * 1000)
                    break
                time.sleep(0.02)
            time.sleep(0.35)  # out of phase with the poll interval
    finally:
        group.stop()
    pickups.sort()
    return {
        "samples": len(pickups),
        "median_ms": round(pickups[len(pickups) // 2], 1),
        "p99_ms": round(pickups[min(len(pickups) - 1, int(0.99 * len(pickups)))], 1),
        "max_ms": round(pickups[-1], 1),
        "poll_seconds": float(ENV["TUNIX_Q_POLL"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--quick", action="store_true", help="10 s instead of 30 s at 100 r/s")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    reset_database()
    token = setup_django()
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "setup": {
            "gunicorn": f"{GUNICORN_WORKERS} workers x {GUNICORN_THREADS} threads "
            "(tunix_rt/gunicorn_conf.py: gthread, keep-alive, SO_REUSEPORT)",
            "max_throughput_client": "wrk (keep-alive)" if wrk.available() else "bench/loadgen.py",
            "qcluster": "2 workers per cluster, poll " + ENV["TUNIX_Q_POLL"] + " s",
            "database": "PostgreSQL on the same machine",
            "log_level": "WARNING",
        },
        "sizes": [],
    }
    for size in sizes:
        seed(size)
        web = Gunicorn()
        try:
            entry = list_benchmarks(token, size, args.quick)
            entry["web_rss_mib"] = rss_mib([web.proc.pid])
            if size == sizes[0]:
                entry["pickup"] = pickup_benchmark(token)
            if size in (sizes[0], sizes[-1]):
                entry["drain"] = [drain_benchmark(1), drain_benchmark(3)]
            if size == sizes[-1]:
                entry["enqueue_8conn"] = enqueue_benchmark(token)
                entry.update(status_benchmarks(token))
                entry.update(probe_benchmarks())
                entry["web_rss_after_mib"] = rss_mib([web.proc.pid])
        finally:
            web.stop()
        if size == sizes[0]:
            entry["overload"] = overload_benchmark(token)
        report["sizes"].append(entry)
        print(json.dumps(entry, indent=1), flush=True)
    write_report(report)


if __name__ == "__main__":
    main()
