"""Soak: steady enqueue, two worker clusters and polling pages for a bounded time, with resident
memory and database connections sampled from start to end. Writes bench/results/soak-<stamp>.json.

    .venv/bin/python bench/soak.py --minutes 20

Same setup as bench/run.py (its own PostgreSQL database, production gunicorn settings, real
qcluster processes, everything on this machine). Each second: ENQUEUE_PER_SECOND dry-runs
queued through the API, the run list page and a run's polled fragment fetched with a browser
session, and status and list calls through the API. Every SAMPLE_SECONDS: the resident memory of
every web and worker process and the number of connections to the database.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import (  # noqa: E402
    BASE,
    DB_NAME,
    PG,
    Clusters,
    Gunicorn,
    auth,
    reset_database,
    rss_mib,
    setup_django,
    write_report,
)

ENQUEUE_PER_SECOND = int(os.environ.get("SOAK_ENQUEUE_PER_SECOND", "5"))
SAMPLE_SECONDS = 60


def browser_session() -> requests.Session:
    """Logged in through the login page, as a browser is (session cookie and CSRF token)."""
    session = requests.Session()
    page = session.get(f"{BASE}/accounts/login/", timeout=10).text
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    response = session.post(
        f"{BASE}/accounts/login/",
        data={
            "username": "bench",
            "password": "bench-password-123",
            "csrfmiddlewaretoken": match.group(1),
        },
        headers={"Referer": f"{BASE}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    return session


def database_connections() -> int:
    import psycopg

    with psycopg.connect(f"{PG}/postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [DB_NAME]
        ).fetchone()
    return int(row[0]) if row else 0


def sample(web: Gunicorn, workers: Clusters, counters: dict[str, int]) -> dict[str, Any]:
    web_rss = rss_mib([web.proc.pid])
    worker_rss = rss_mib([p.pid for p in workers.procs])
    return {
        "t_s": None,
        "web_rss_mib": web_rss,
        "web_rss_total_mib": round(sum(web_rss), 1),
        "worker_rss_mib": worker_rss,
        "worker_rss_total_mib": round(sum(worker_rss), 1),
        "db_connections": database_connections(),
        **counters,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=20)
    args = parser.parse_args()
    reset_database()
    token = setup_django()
    web = Gunicorn()
    workers = Clusters(2)
    api = requests.Session()
    api.headers.update({**auth(token), "Content-Type": "application/json"})
    body = json.dumps({"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"})
    counters = {"enqueued": 0, "page_polls": 0, "api_polls": 0, "errors": 0}
    samples: list[dict[str, Any]] = []
    started_at = datetime.now(UTC)
    started = time.monotonic()
    next_sample = started
    last_run = ""
    try:
        browser = browser_session()
        time.sleep(3)  # the clusters come up
        while time.monotonic() - started < args.minutes * 60:
            tick = time.monotonic()
            if tick >= next_sample:
                entry = sample(web, workers, counters)
                entry["t_s"] = round(tick - started)
                samples.append(entry)
                print(
                    json.dumps({k: v for k, v in entry.items() if "mib" not in k or "total" in k})
                )
                next_sample += SAMPLE_SECONDS
            for _ in range(ENQUEUE_PER_SECOND):
                response = api.post(f"{BASE}/api/tunix/run?mode=async", data=body, timeout=10)
                if response.status_code == 202:
                    counters["enqueued"] += 1
                    last_run = response.json()["run_id"]
                else:
                    counters["errors"] += 1
            for path in ("/", f"/runs/{last_run}/live"):
                ok = browser.get(f"{BASE}{path}", timeout=10).status_code in {200, 286, 304}
                counters["page_polls"] += 1
                counters["errors"] += 0 if ok else 1
            for path in (f"/api/tunix/runs/{last_run}/status", "/api/tunix/runs?limit=20"):
                ok = api.get(f"{BASE}{path}", timeout=10).status_code == 200
                counters["api_polls"] += 1
                counters["errors"] += 0 if ok else 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        time.sleep(10)  # the queue drains
        final = sample(web, workers, counters)
        final["t_s"] = round(time.monotonic() - started)
        samples.append(final)
    finally:
        workers.stop()
        web.stop()

    def growth(key: str) -> dict[str, float]:
        first = statistics.median(s[key] for s in samples[1:4])  # after warm-up
        last = statistics.median(s[key] for s in samples[-3:])
        return {"start": first, "end": last, "change_pct": round(100 * (last - first) / first, 1)}

    from runs.models import RunStatus, TunixRun

    report = {
        "started": started_at.isoformat(timespec="seconds"),
        "minutes": args.minutes,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "load": f"{ENQUEUE_PER_SECOND} dry-runs/s queued; each second the run list page, a run's "
        "polled fragment, its API status and the API list; 2 qclusters x 2 workers",
        "runs_completed": TunixRun.objects.filter(status=RunStatus.COMPLETED).count(),
        "runs_pending_at_end": TunixRun.objects.filter(status=RunStatus.PENDING).count(),
        "web_rss_total_mib": growth("web_rss_total_mib"),
        "worker_rss_total_mib": growth("worker_rss_total_mib"),
        "db_connections": growth("db_connections"),
        "db_connections_max": max(s["db_connections"] for s in samples),
        "counters": counters,
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    write_report(report, prefix="soak-", stamp=started_at)


if __name__ == "__main__":
    main()
