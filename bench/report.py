"""Print a bench/results/*.json as the Markdown tables of docs/PERFORMANCE_BASELINE.md, each
number beside its target and whether it was met.

    .venv/bin/python bench/report.py bench/results/<stamp>.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def answers(result: dict[str, Any]) -> str:
    codes = ", ".join(f"{n} x {code}" for code, n in sorted(result["statuses"].items()))
    errors = result.get("errors", 0)
    return codes + (f", {errors} errors" if errors else "")


def tail(result: dict[str, Any]) -> str:
    middle = result.get("p95_ms", result.get("p90_ms"))
    return f"{result['p50_ms']} / {middle} / {result['p99_ms']} / {result['max_ms']}"


def spread(result: dict[str, Any]) -> str:
    runs = result.get("rps_each_run", [result["rps"]])
    return " · ".join(str(r) for r in runs)


def floor(result: dict[str, Any]) -> str:
    """This maximum over the floor's (/api/bench/floor, measured just before each run)."""
    if "floor_ratio" not in result:
        return "-"
    return f"{result['floor_ratio']:.2f}x of {result['floor_rps']:.0f}"


def main(path: str) -> None:
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    setup = report["setup"]
    sizes = report["sizes"]
    print(
        f"Run of {report['started']} on {report['machine']['cpus']} CPUs, Python "
        f"{report['machine']['python']}. Web: gunicorn {setup['gunicorn']}. Workers: "
        f"{setup['qcluster']}. {setup['database']}. Log level {setup['log_level']}. "
        f"Closed-loop maxima: {setup.get('max_throughput_client', 'bench/loadgen.py')}, "
        "8 connections, median of 3 runs (each run listed).\n"
    )

    print("### (a) List at a fixed 100 r/s, latency from each request's due time\n")
    print(
        "| runs in table | client-side, kept-alive: P50 / P95 / P99 / max ms | answers | "
        "server time (gunicorn): P50 / P95 / P99 / max ms | target: server P99 ≤ 4 ms | "
        "client-side, new connection per request |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for e in sizes:
        r = e["list_100rps"]
        server = e.get("list_100rps_server")
        fresh = e.get("list_100rps_new_conn")
        binding = e["rows"] >= 100_000
        if not binding:
            mark = "(not a target)"
        else:
            mark = verdict(server["p99_ms"] <= 4) if server else "-"
        print(
            f"| {e['rows']:,} | {tail(r)} | {answers(r)} | {tail(server) if server else '-'} | "
            f"{mark} | {tail(fresh) if fresh else '-'} |"
        )
    floors = [e["healthz_100rps"] for e in sizes if "healthz_100rps" in e]
    if floors:
        print(
            f"\nThe same client against `/healthz` (no database; about 0.3 ms of server time) "
            f"at 100 r/s: {tail(floors[0])} ms. That is the floor the Python client, loopback "
            "TCP and gunicorn's thread hand-off add to every latency in this table."
        )

    print("\n### (b) List, maximum throughput\n")
    print(
        "| runs in table | r/s (each run) | vs floor (floor r/s) | P50 / P90 / P99 / max ms | "
        "target ≥ 1,000 r/s |"
    )
    print("| --- | --- | --- | --- | --- |")
    for e in sizes:
        r = e["list_max_8conn"]
        mark = verdict(r["rps"] >= 1000)
        print(f"| {e['rows']:,} | **{r['rps']}** ({spread(r)}) | {floor(r)} | {tail(r)} | {mark} |")

    print("\n### (c) Deep pages: a cursor 90 % of the way down the table\n")
    print(
        "| runs in table | @100 r/s client-side P50 / P95 / P99 / max ms | server time | "
        "vs first page, server P50 and P99 | max r/s (each run) | offset=10000 max r/s | "
        "target ≤ 1.5x first page |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for e in sizes:
        deep, first = e["deep_cursor_100rps"], e["list_100rps"]
        deep_server = e.get("deep_cursor_100rps_server") or deep
        first_server = e.get("list_100rps_server") or first
        p50 = deep_server["p50_ms"] / first_server["p50_ms"]
        p99 = deep_server["p99_ms"] / first_server["p99_ms"]
        server = tail(e["deep_cursor_100rps_server"]) if "deep_cursor_100rps_server" in e else "-"
        print(
            f"| {e['rows']:,} | {tail(deep)} | {server} | {p50:.2f}x, {p99:.2f}x | "
            f"{e['deep_cursor_max_8conn']['rps']} ({spread(e['deep_cursor_max_8conn'])}) | "
            f"{e['offset_10000_max_8conn']['rps']} | {verdict(p50 <= 1.5 and p99 <= 1.5)} |"
        )

    for e in sizes:
        if "enqueue_8conn" not in e:
            continue
        r = e["enqueue_8conn"]
        print(f"\n### (d) Async enqueue (`POST /api/tunix/run?mode=async`), {e['rows']:,} runs\n")
        print(
            "| r/s (each run) | vs floor (floor r/s) | P50 / P90 / P99 / max ms | answers | "
            "target ≥ 600 r/s |"
        )
        print("| --- | --- | --- | --- | --- |")
        mark = verdict(r["rps"] >= 600)
        print(f"| **{r['rps']}** ({spread(r)}) | {floor(r)} | {tail(r)} | {answers(r)} | {mark} |")

    for e in sizes:
        if "pickup" not in e:
            continue
        p = e["pickup"]
        print(f"\n### (e) Pickup (enqueue → running) on an idle cluster, {e['rows']:,} runs\n")
        print(
            "| samples | poll s | median ms | P99 ms | max ms | target median ≤ 300, P99 ≤ 1000 |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        ok = p["median_ms"] <= 300 and p["p99_ms"] <= 1000
        print(
            f"| {p['samples']} | {p['poll_seconds']} | {p['median_ms']} | {p['p99_ms']} | "
            f"{p['max_ms']} | {verdict(ok)} |"
        )

    print("\n### (f) Drain: 2000 dry-runs queued at once\n")
    print("| runs in table | clusters x workers | runs/s | seconds | target |")
    print("| --- | --- | --- | --- | --- |")
    rates: dict[tuple[int, int], float] = {}
    for e in sizes:
        for d in e.get("drain", []):
            rates[(e["rows"], d["clusters"])] = d["runs_per_second"]
    smallest = min(e["rows"] for e in sizes)
    for e in sizes:
        for d in e.get("drain", []):
            target = ""
            if d["clusters"] == 3:
                target = f"≥ 150: {verdict(d['runs_per_second'] >= 150)}"
                base = rates.get((smallest, 3))
                if e["rows"] != smallest and base:
                    slower = 1 - d["runs_per_second"] / base
                    target += f"; vs {smallest:,}: {slower:+.0%} slower, ≤ 20 %: "
                    target += verdict(slower <= 0.2)
            print(
                f"| {e['rows']:,} | {d['clusters']} x {d['workers_per_cluster']} | "
                f"{d['runs_per_second']} | {d['seconds']} | {target} |"
            )

    for e in sizes:
        if "status_200_max_8conn" not in e:
            continue
        print(f"\n### (g) Status polls, {e['rows']:,} runs\n")
        print(
            "| request | r/s (each run) | vs floor (floor r/s) | P50 / P90 / P99 / max ms | "
            "answers | target |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for label, key, goal in (
            ("plain", "status_200_max_8conn", 1500),
            ("If-None-Match", "status_304_max_8conn", 2000),
        ):
            r = e[key]
            print(
                f"| {label} | **{r['rps']}** ({spread(r)}) | {floor(r)} | {tail(r)} | "
                f"{answers(r)} | ≥ {goal:,}: {verdict(r['rps'] >= goal)} |"
            )
        if "healthz_max_8conn" in e:
            print(f"\n### (g2) Probes at full speed, {e['rows']:,} runs\n")
            print(
                "| probe | r/s (each run) | vs floor (floor r/s) | P50 / P90 / P99 / max ms | "
                "answers |"
            )
            print("| --- | --- | --- | --- | --- |")
            for label, key in (("/healthz", "healthz_max_8conn"), ("/readyz", "readyz_max_8conn")):
                r = e[key]
                print(
                    f"| {label} | {r['rps']} ({spread(r)}) | {floor(r)} | {tail(r)} | "
                    f"{answers(r)} |"
                )

    print("\n### (h) Resident memory, MiB per process\n")
    for e in sizes:
        line = f"* {e['rows']:,} runs: gunicorn master and workers {e['web_rss_mib']}"
        if "web_rss_after_mib" in e:
            line += f"; after the enqueue and status load {e['web_rss_after_mib']}"
        print(line)
        for d in e.get("drain", []):
            rss = d["worker_rss_mib"]
            print(f"  * {d['clusters']} cluster(s), every process, while draining: {rss}")

    for e in sizes:
        if "overload" not in e:
            continue
        o = e["overload"]
        print(
            f"\n### Overload: list at {o['rate']:.0f} r/s for {o['seconds']} s, a new connection "
            f"per request, {e['rows']:,} runs\n"
        )
        print(
            "| shedding | answered r/s | all P50 / P95 / P99 / max ms | answers | "
            "200 P99 ms | 503 P99 ms |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for label in ("shedding_on", "shedding_off"):
            r = o[label]
            by = r.get("latency_by_status", {})
            ok_p99 = by.get("200", {}).get("p99_ms", r["p99_ms"] if "200" in r["statuses"] else "")
            shed_p99 = by.get("503", {}).get("p99_ms", "")
            print(
                f"| {label.split('_')[1]} | {r['rps']} | {tail(r)} | {answers(r)} | {ok_p99} | "
                f"{shed_p99} |"
            )


if __name__ == "__main__":
    main(sys.argv[1])
