"""The compare page and its API for the shape they are built for: 5 runs of 48 steps, each with
64 evaluation items. Writes bench/results/compare-<stamp>.json.

    .venv/bin/python bench/compare.py [--requests 300]

Same setup as bench/run.py: its own PostgreSQL database, the production gunicorn settings, all
on this machine. The runs are written as a worker leaves them (loss curve, series, final
metrics, eval/predictions.jsonl in the artifact directory). Each URL is fetched ``--requests``
times, one request at a time, after a warm-up; the numbers are the server's own time (request
read to response written, from gunicorn's access log), the time a page costs the server
whatever the network adds. Target: the page within 100 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import (  # noqa: E402
    ACCESS_LOG,
    BASE,
    GUNICORN_THREADS,
    GUNICORN_WORKERS,
    VAR,
    Gunicorn,
    auth,
    log_offset,
    reset_database,
    server_times,
    setup_django,
    write_report,
)
from bench.soak import browser_session  # noqa: E402

RUNS, STEPS, ITEMS = 5, 48, 64
TARGET_MS = 100.0
DEMO = REPO / "runs" / "demo" / "tunix-demo-v1.jsonl"


def prediction(completion: str, run: int, line: int) -> str:
    """Run 0 answers every item right; the others miss some, each a different set."""
    if run and (line * (run + 3)) % 7 == 0:
        return completion[::-1]
    return completion


def scores(predicted: str, reference: str) -> dict[str, float]:
    from runs.scorers import ExactMatch, TokenF1

    f1 = TokenF1().score(predicted, reference)
    return {"exact_match": ExactMatch().score(predicted, reference), "token_f1": f1, "rouge_l": f1}


def create_runs() -> list[str]:
    """RUNS completed trainings of the demo dataset, as a worker leaves them."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.utils import timezone

    from runs.models import Dataset, RunMode, RunStatus, TunixRun
    from runs.training_config import PARAMS

    dataset = Dataset.objects.get(key="tunix-demo-v1")
    user = User.objects.get(username="bench")
    records = [json.loads(line) for line in DEMO.read_text().splitlines()][:ITEMS]
    now = timezone.now()
    ids = []
    for index in range(RUNS):
        scale = 1.0 + 0.15 * index
        curve = [[step, round(scale * 4.0 / (1 + 0.1 * step), 6)] for step in range(1, STEPS + 1)]
        evals = [
            [step, round(scale * 4.4 / (1 + 0.1 * step), 6)] for step in range(8, STEPS + 1, 8)
        ]
        lines = [
            {
                "line": line,
                "prompt": record["prompt"],
                "reference": record["completion"],
                "prediction": (answer := prediction(record["completion"], index, line)),
                "scores": scores(answer, record["completion"]),
            }
            for line, record in enumerate(records, start=1)
        ]
        means = {
            name: math.fsum(item["scores"][name] for item in lines) / len(lines)
            for name in ("exact_match", "token_f1", "rouge_l")
        }
        run = TunixRun.objects.create(
            dataset=dataset,
            model_id="tunix-rt/tiny-llama3",
            mode=RunMode.LOCAL,
            status=RunStatus.COMPLETED,
            config={p.name: p.default for p in PARAMS} | {"learning_rate": 0.003 / (index + 1)},
            attempt=1,
            exit_code=0,
            started_at=now - timedelta(minutes=5),
            completed_at=now - timedelta(minutes=4),
            created_by=user,
            loss_curve=curve,
            series={
                "eval_loss": evals,
                "learning_rate": [[step, 0.003 / (index + 1)] for step in range(1, STEPS + 1)],
                "tokens_per_second": [[step, 2000.0 + 10 * step] for step in range(1, STEPS + 1)],
            },
            metrics={
                "train_loss": curve[-1][1],
                "eval_loss": evals[-1][1],
                "steps": STEPS,
                "tokens_per_second": 2200.0 - 50 * index,
                "wall_seconds": 20.0 + index,
                "compiled_shapes": 3,
                "eval_items": ITEMS,
                "eval_seconds": 6.0 + index / 2,
                **means,
            },
        )
        directory = Path(settings.TUNIX_ARTIFACTS_ROOT) / run.output_dir / "eval"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "predictions.jsonl").write_text(
            "".join(json.dumps(item) + "\n" for item in lines)
        )
        ids.append(str(run.id))
    return ids


def measure(session: requests.Session, url: str, path: str, count: int) -> dict[str, Any]:
    for _ in range(20):  # warm-up: templates compiled, connections open, files parsed
        session.get(url, timeout=10)
    time.sleep(0.5)  # the warm-up's access log lines are written before the mark
    mark = log_offset()
    sizes = set()
    for _ in range(count):
        response = session.get(url, timeout=10)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
        sizes.add(len(response.content))
    time.sleep(0.5)  # the access log's last lines are written
    return {
        "url": url.removeprefix(BASE),
        "bytes": max(sizes),
        **server_times(mark, path),
        "over_target": slower_than(mark, path, TARGET_MS),
    }


def slower_than(since: int, path: str, ms: float) -> int:
    """Requests for ``path`` in the access log after offset ``since`` that took over ``ms``."""
    with ACCESS_LOG.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    return sum(
        1
        for parts in (line.split() for line in lines)
        if parts[2:3] == [path] and int(parts[0]) > ms * 1000
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    reset_database()
    token = setup_django()
    ids = create_runs()
    query = "&".join(f"ids={run_id}" for run_id in ids)
    comma = ",".join(ids)
    web = Gunicorn()
    started = datetime.now(UTC)
    try:
        browser = browser_session()
        api = requests.Session()
        api.headers.update(auth(token))
        results = {
            "page": measure(
                browser, f"{BASE}/runs/compare?{query}", "/runs/compare", args.requests
            ),
            "page_disagree_filter": measure(
                browser, f"{BASE}/runs/compare?{query}&disagree=1", "/runs/compare", args.requests
            ),
            "page_2": measure(
                browser, f"{BASE}/runs/compare?{query}&page=2", "/runs/compare", args.requests
            ),
            "api_compare": measure(
                api,
                f"{BASE}/api/tunix/runs/compare?ids={comma}",
                "/api/tunix/runs/compare",
                args.requests,
            ),
            "api_items": measure(
                api,
                f"{BASE}/api/tunix/runs/compare/items?ids={comma}",
                "/api/tunix/runs/compare/items",
                args.requests,
            ),
            "api_items_csv": measure(
                api,
                f"{BASE}/api/tunix/runs/compare/items.csv?ids={comma}",
                "/api/tunix/runs/compare/items.csv",
                args.requests,
            ),
        }
    finally:
        web.stop()
    report = {
        "started": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "setup": {
            "gunicorn": f"{GUNICORN_WORKERS} workers x {GUNICORN_THREADS} threads "
            "(tunix_rt/gunicorn_conf.py)",
            "database": "PostgreSQL on the same machine",
            "artifacts": str(VAR / "artifacts"),
            "client": "one request at a time (requests, keep-alive)",
        },
        "shape": {"runs": RUNS, "steps": STEPS, "items_per_run": ITEMS},
        "target_ms": TARGET_MS,
        "results": results,
    }
    print(json.dumps(report, indent=1))
    write_report(report, prefix="compare-", stamp=started)


if __name__ == "__main__":
    main()
