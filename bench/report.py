"""Print a bench/results/*.json as the Markdown tables of docs/PERFORMANCE_BASELINE.md.

.venv/bin/python bench/report.py bench/results/<stamp>.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def row(label: str, result: dict[str, Any], target: str = "") -> str:
    codes = ", ".join(f"{code}x{n}" for code, n in sorted(result["statuses"].items()))
    return (
        f"| {label} | {result['rps']} | {result['p50_ms']} | {result['p95_ms']} | "
        f"{result['p99_ms']} | {result['errors']} | {codes} | {target} |"
    )


def main(path: str) -> None:
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    setup = report["setup"]
    print(
        f"Run {report['started']} · {report['machine']['cpus']} CPUs · Python "
        f"{report['machine']['python']} · web: {setup['gunicorn']} · {setup['qcluster']} · "
        f"{setup['database']} · log level {setup['log_level']}\n"
    )
    print("| measurement | r/s | P50 ms | P95 ms | P99 ms | errors | answers | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for entry in report["sizes"]:
        rows = f"{entry['rows']:,}"
        print(row(f"list @100 r/s, {rows} runs", entry["list_100rps"], "P99 ≤ 6 ms"))
        print(row(f"list max, 8 conns, {rows} runs", entry["list_max_8conn"], "≥ 600 r/s"))
        print(
            row(
                f"deep cursor (90 %) @100 r/s, {rows}",
                entry["deep_cursor_100rps"],
                "≤ 1.5x first page",
            )
        )
        print(row(f"deep cursor max, {rows}", entry["deep_cursor_max_8conn"], ""))
        print(row(f"offset=10000 max, {rows}", entry["offset_10000_max_8conn"], "(old clients)"))
        if "enqueue_8conn" in entry:
            print(row(f"async enqueue, 8 conns, {rows}", entry["enqueue_8conn"], "≥ 600 r/s"))
            print(row(f"status 200, 8 conns, {rows}", entry["status_200_max_8conn"], ""))
            print(row(f"status 304, 8 conns, {rows}", entry["status_304_max_8conn"], ""))
    print(
        "\n| drain (2000 dry-runs) | table size | clusters x workers | runs/s | seconds | target |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for entry in report["sizes"]:
        for drain in entry.get("drain", []):
            print(
                f"| | {entry['rows']:,} | {drain['clusters']} x {drain['workers_per_cluster']} | "
                f"{drain['runs_per_second']} | {drain['seconds']} | ≥ 150 with 3 |"
            )
    for entry in report["sizes"]:
        if "pickup" in entry:
            p = entry["pickup"]
            print(
                f"\nPickup on an idle cluster (poll {p['poll_seconds']} s), {p['samples']} "
                f"samples: median {p['median_ms']} ms, P99 {p['p99_ms']} ms, max {p['max_ms']} ms "
                "(targets: median ≤ 300 ms, P99 ≤ 1 s)."
            )
    print("\nResident memory (MiB):")
    for entry in report["sizes"]:
        print(
            f"* {entry['rows']:,} runs: gunicorn master + workers {entry['web_rss_mib']}"
            + (
                f", after the enqueue/status load {entry['web_rss_after_mib']}"
                if "web_rss_after_mib" in entry
                else ""
            )
        )
        for drain in entry.get("drain", []):
            print(f"  * {drain['clusters']} cluster(s) while draining: {drain['worker_rss_mib']}")


if __name__ == "__main__":
    main(sys.argv[1])
