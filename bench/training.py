"""Real trainings of the tiny preset. Writes bench/results/training-<stamp>.json.

    .venv/bin/python bench/training.py [--repeats 5] [--corpus-repeats 3] [--before DIR]
    .venv/bin/python bench/training.py --corpora-only [--before DIR]
    .venv/bin/python bench/training.py --generation [--generation-repeats 3]
    .venv/bin/python bench/training.py --algorithms [--repeats 3]

Algorithms (``--algorithms``, on its own): the overhead below for each training algorithm (sft,
dpo, orpo, grpo) on its demo dataset, and the direct training process's peak resident memory.

Corpora: the trainer's throughput (real tokens a second, padding not counted, as it reports it)
on a generated skewed-length corpus (550 prompt/completion records, median 37 bytes, longest
1,400, lognormal lengths) and on a short-uniform one (550 records of 30 to 44 bytes), trained
alternately with the same hyperparameters (the defaults: 3 epochs, batch 8; generation eval
off), each run a fresh process as the worker starts it. Target: skewed >= 0.5 x short.
``--before DIR`` also trains the skewed corpus once with DIR's runs/trainer.py (a worktree of an
earlier commit) for comparison.

Overhead (skipped with --corpora-only): the tiny preset queued through Tunix RT versus the
same training started directly from Python.

Generation (``--generation``, on its own): the cost of the generation eval after training. The
demo dataset with the default hyperparameters, trained alternately with ``eval_max_items=0``
(no generation) and with the default (its 6 held-out records completed and scored), each run a
fresh process; the process walls and their median ratio (the target: with generation <=
without x 1.3), the processes' CPU seconds likewise (a machine busy with other work moves them
less than the walls), and the trainer's ``eval_seconds``.

Needs google-tunix (make install-tunix) and PostgreSQL (BENCH_PG, as bench/run.py; not for
``--corpora-only`` or ``--generation``). Queued: from the API's POST until a client polling the
status endpoint every 50 ms sees "completed", with gunicorn and one qcluster as in production.
Direct: a fresh Python process that imports the trainer and trains the same config, from spawn
to exit. Both include interpreter start, JAX import and compilation, which is what a user waits
for either way. Target: queued <= direct x 1.1 + 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import shutil
import statistics
import string
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.loadgen import request  # noqa: E402
from bench.run import (  # noqa: E402
    BASE,
    ENV,
    VAR,
    Clusters,
    Gunicorn,
    auth,
    reset_database,
    setup_django,
    write_report,
)
from runs import training_config  # noqa: E402 (Django-free)

EPOCHS = 3  # the demo dataset: 8 steps an epoch, so 24 steps
CORPUS_RECORDS = 550
# JAX_LOG_COMPILES' line for the train and eval step functions Tunix jits.
STEP_COMPILE = re.compile(
    r"Finished XLA compilation of jit\(_(?:train|eval)_step\) in ([0-9.]+) sec"
)
SKEWED_MEDIAN_BYTES, SKEWED_LONGEST_BYTES = 37, 1400
SHORT_BYTES = (30, 44)
SHORTEST_BYTES = 8  # a prompt and a completion of a few bytes each
CORPUS_HYPER = training_config.defaults(training_config.SFT)  # the run defaults
DEMO = REPO / "runs" / "demo" / "tunix-demo-v1.jsonl"
GENERATION_TARGET = 1.3  # generation eval may add at most 30 % to the demo run's wall
# The corpora compare training throughput: the generation eval after it (--generation measures
# it) would only lengthen each run.
NO_GENERATION = {"eval_max_items": 0}


SFT_BODY = {
    "dataset_key": "tunix-demo-v1",
    "model_id": "tunix-rt/tiny-llama3",
    "dry_run": False,
    "num_epochs": EPOCHS,
}
# --algorithms: each algorithm on its demo dataset, a few dozen steps like the SFT run above.
ALGORITHM_RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sft": ("tunix-demo-v1", "tunix-demo-v1.jsonl", {"num_epochs": EPOCHS}),
    "dpo": ("pairs-v1", "tunix-demo-preference-v1.jsonl", {"batch_size": 4, "max_steps": 24}),
    "orpo": ("pairs-v1", "tunix-demo-preference-v1.jsonl", {"batch_size": 4, "max_steps": 24}),
    "grpo": (
        "math-v1",
        "tunix-demo-math-v1.jsonl",
        {"batch_size": 2, "num_generations": 2, "max_new_tokens": 16, "max_steps": 8},
    ),
}


def queued_run(token: str, fields: dict[str, Any] | None = None) -> tuple[float, str]:
    body = json.dumps(fields or SFT_BODY).encode()
    headers = {**auth(token), "Content-Type": "application/json"}
    started = time.perf_counter()
    status, _, payload = asyncio.run(
        request(f"{BASE}/api/tunix/run?mode=async", method="POST", body=body, headers=headers)
    )
    assert status == 202, payload
    run_id = json.loads(payload)["run_id"]
    while True:
        status, _, payload = asyncio.run(
            request(f"{BASE}/api/tunix/runs/{run_id}/status", headers=auth(token))
        )
        state = json.loads(payload)["status"]
        if state in {"completed", "failed", "cancelled"}:
            assert state == "completed", payload
            return time.perf_counter() - started, run_id
        time.sleep(0.05)


def direct_run(run_id: str, repeat: int) -> float:
    return direct_run_measured(run_id, repeat)[0]


def direct_run_measured(run_id: str, repeat: int) -> tuple[float, float]:
    """The queued run's own config, trained again from Python into a directory of its own:
    the process's wall seconds and its peak resident memory (GiB)."""
    spec = json.loads((VAR / "artifacts" / run_id / "tunix_config.json").read_text())
    # A directory of its own: Tunix resumes from any checkpoint it finds in one, such as an
    # earlier direct run's.
    out = VAR / "direct" / f"{repeat}-{run_id}"
    shutil.rmtree(out, ignore_errors=True)
    spec["output"] = {
        "dir": str(out),
        "checkpoints": str(out / "checkpoints"),
        "metrics": str(out / "metrics"),
    }
    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.json"
    config.write_text(json.dumps(spec))
    code = "import sys; from runs.trainer import main; sys.exit(main([sys.argv[1]]))"
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(config)],
        cwd=out,
        env={**ENV, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
    )
    # wait4: this child's own resource use (RUSAGE_CHILDREN would be the peak of them all).
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, f"direct run of {run_id} exited {proc.returncode}"
    return elapsed, usage.ru_maxrss / 2**20  # KiB on Linux


def run_breakdown(run_id: str) -> dict[str, float]:
    from runs.models import TunixRun

    run = TunixRun.objects.get(id=run_id)
    assert run.started_at
    assert run.completed_at
    return {
        "queued_to_started_s": round((run.started_at - run.queued_at).total_seconds(), 3),
        "started_to_completed_s": round((run.completed_at - run.started_at).total_seconds(), 3),
        "trainer_loop_s": run.metrics.get("wall_seconds", 0.0),
    }


def record(rng: random.Random, size: int) -> dict[str, str]:
    """A prompt/completion record of ``size`` UTF-8 bytes, a third of them prompt."""
    prompt = max(3, size // 3)
    letters = string.ascii_lowercase + " "
    return {
        "prompt": "".join(rng.choices(letters, k=prompt)),
        "completion": "".join(rng.choices(letters, k=size - prompt)),
    }


def skewed_sizes(count: int = CORPUS_RECORDS) -> list[int]:
    """Lognormal record sizes with the given median and longest: the distribution's quantiles
    at (i + 0.5) / count, so the corpus is the same on every run, in shuffled order."""
    normal = statistics.NormalDist()
    top = normal.inv_cdf((count - 0.5) / count)
    sigma = math.log(SKEWED_LONGEST_BYTES / SKEWED_MEDIAN_BYTES) / top
    sizes = [
        max(SHORTEST_BYTES, round(SKEWED_MEDIAN_BYTES * math.exp(sigma * normal.inv_cdf(q))))
        for q in ((i + 0.5) / count for i in range(count))
    ]
    random.Random(1).shuffle(sizes)
    return sizes


def write_corpora(directory: Path) -> dict[str, Path]:
    rng = random.Random(2)
    sizes = {
        "skewed": skewed_sizes(),
        "short": [rng.randint(*SHORT_BYTES) for _ in range(CORPUS_RECORDS)],
    }
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, corpus in sizes.items():
        path = directory / f"{name}.jsonl"
        lines = (json.dumps(record(rng, size)) for size in corpus)
        path.write_text("".join(line + "\n" for line in lines))
        paths[name] = path
    return paths


def corpus_stats(path: Path) -> dict[str, int]:
    sizes = sorted(
        len((r["prompt"] + r["completion"]).encode())
        for r in map(json.loads, path.read_text().splitlines())
    )
    return {
        "records": len(sizes),
        "median_bytes": round(statistics.median(sizes)),
        "longest_bytes": sizes[-1],
        "total_bytes": sum(sizes),
    }


def corpus_run(
    dataset: Path, out: Path, *, trainer_root: Path = REPO, hyper: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One training of the tiny preset on ``dataset`` by ``trainer_root``'s runs/trainer.py, in
    a fresh process as the worker runs it (the defaults, and ``hyper``); its TUNIX_RESULT
    payload, and the process's wall."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = {
        "run_id": out.name,
        "mode": "local",
        "model": {"id": "tunix-rt/tiny-llama3"},
        "dataset": {"key": dataset.stem, "path": str(dataset), "format": "prompt_completion"},
        "training": {**CORPUS_HYPER, **(hyper or {})},
        "output": {
            "dir": str(out),
            "checkpoints": str(out / "checkpoints" / "attempt-1"),
            "metrics": str(out / "metrics" / "attempt-1"),
        },
    }
    config = out / "tunix_config.json"
    config.write_text(json.dumps(spec))
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "runs.trainer", str(config)],
        cwd=out,
        # JAX logs each XLA compilation and its duration: how much of the wall is compiling.
        env={**os.environ, "PYTHONPATH": str(trainer_root), "JAX_LOG_COMPILES": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    process = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [x for x in proc.stdout.splitlines() if x.startswith("TUNIX_RESULT ")]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("TUNIX_RESULT "))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # megabytes a run, not needed
    compiles = [float(seconds) for seconds in STEP_COMPILE.findall(proc.stderr)]
    real_tokens = result["tokens_per_second"] * result["wall_seconds"]
    return {
        **result,
        "process_s": round(process, 3),
        # CPU seconds (user + system) of the process: less moved than its wall by whatever else
        # the machine runs meanwhile.
        "process_cpu_s": round(
            cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 3
        ),
        "step_compilations": len(compiles),
        "step_compile_s": round(sum(compiles), 3),
        # Throughput once compiled: what more steps (or a warm compilation cache) tend to.
        "tokens_per_second_compiled": round(
            real_tokens / (result["wall_seconds"] - sum(compiles)), 1
        ),
    }


def compare_corpora(repeats: int, before: Path | None) -> dict[str, Any]:
    """Skewed and short trained alternately (so a slower stretch of the machine hits both),
    then, with ``before``, the skewed corpus once by that checkout's trainer."""
    directory = VAR / "corpora"
    corpora = write_corpora(directory)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in corpora}
    for repeat in range(repeats):
        for name, path in corpora.items():
            result = corpus_run(path, directory / f"{name}-{repeat}", hyper=NO_GENERATION)
            samples[name].append(result)
            print(json.dumps({"corpus": name, **result}), flush=True)
    medians = {
        name: statistics.median(s["tokens_per_second"] for s in runs)
        for name, runs in samples.items()
    }
    ratio = medians["skewed"] / medians["short"]
    compiled = {
        name: statistics.median(s["tokens_per_second_compiled"] for s in runs)
        for name, runs in samples.items()
    }
    report: dict[str, Any] = {
        "training": "tunix-rt/tiny-llama3, defaults: 3 epochs, batch 8, seed 42, 10 % held out",
        "corpora": {name: corpus_stats(path) for name, path in corpora.items()},
        "samples": samples,
        "skewed_tokens_per_second": medians["skewed"],
        "short_tokens_per_second": medians["short"],
        "skewed_over_short": round(ratio, 3),
        "target": 0.5,
        "met": ratio >= 0.5,
        "compiled_skewed_over_short": round(compiled["skewed"] / compiled["short"], 3),
    }
    if before is not None:
        result = corpus_run(
            corpora["skewed"], directory / "skewed-before", trainer_root=before, hyper=NO_GENERATION
        )
        print(json.dumps({"corpus": "skewed", "trainer": "before", **result}), flush=True)
        report["before"] = {
            "trainer": _commit(before),
            "skewed": result,
            "speedup": round(medians["skewed"] / result["tokens_per_second"], 1),
        }
    return report


def compare_generation(repeats: int) -> dict[str, Any]:
    """The demo run without and with generation eval, alternately (so a slower stretch of the
    machine hits both); each in a directory of its own, since Tunix resumes from checkpoints
    it finds in one."""
    directory = VAR / "generation"
    variants: dict[str, dict[str, Any]] = {"without": NO_GENERATION, "with": {}}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    corpus_run(DEMO, directory / "warm")  # page cache: JAX and Tunix files read once
    for repeat in range(repeats):
        for name, hyper in variants.items():
            result = corpus_run(DEMO, directory / f"{name}-{repeat}", hyper=hyper)
            samples[name].append(result)
            print(json.dumps({"generation": name, **result}), flush=True)
    medians = {
        name: statistics.median(s["process_s"] for s in runs) for name, runs in samples.items()
    }
    cpu = {
        name: statistics.median(s["process_cpu_s"] for s in runs) for name, runs in samples.items()
    }
    ratio = medians["with"] / medians["without"]
    return {
        "training": "tunix-rt/tiny-llama3, demo dataset, defaults: 3 epochs (24 steps), batch 8",
        "generation": "6 held-out records, max_new_tokens 32, greedy, one batch",
        "samples": samples,
        "without_process_median_s": medians["without"],
        "with_process_median_s": medians["with"],
        "eval_seconds_median": statistics.median(s["eval_seconds"] for s in samples["with"]),
        "with_over_without": round(ratio, 3),
        "without_cpu_median_s": cpu["without"],
        "with_cpu_median_s": cpu["with"],
        "cpu_with_over_without": round(cpu["with"] / cpu["without"], 3),
        "pair_ratios": [
            round(w["process_s"] / wo["process_s"], 3)
            for w, wo in zip(samples["with"], samples["without"], strict=True)
        ],
        "target": GENERATION_TARGET,
        "met": ratio <= GENERATION_TARGET,
    }


def _commit(checkout: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="queued/direct pairs")
    parser.add_argument("--corpus-repeats", type=int, default=3, help="skewed/short pairs")
    parser.add_argument("--corpora-only", action="store_true", help="skip the overhead part")
    parser.add_argument("--before", type=Path, help="a checkout whose trainer to compare")
    parser.add_argument("--generation", action="store_true", help="only the generation eval's cost")
    parser.add_argument("--generation-repeats", type=int, default=3, help="without/with pairs")
    parser.add_argument(
        "--algorithms", action="store_true", help="only each algorithm's queued/direct overhead"
    )
    args = parser.parse_args()
    ENV.pop("TUNIX_TRAINER_COMMAND", None)  # the project's own Tunix trainer
    os.environ.pop("TUNIX_TRAINER_COMMAND", None)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.algorithms:
        overheads = algorithm_overheads(args.repeats)
        write_report({"started": started, "machine": machine, **overheads}, prefix="training-")
        return
    if args.generation:
        generation = compare_generation(args.generation_repeats)
        print(json.dumps({k: v for k, v in generation.items() if k != "samples"}, indent=1))
        write_report({"started": started, "machine": machine, **generation}, prefix="training-")
        return
    corpora = compare_corpora(args.corpus_repeats, args.before)
    summary = {k: v for k, v in corpora.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    if args.corpora_only:
        write_report({"started": started, "machine": machine, **corpora}, prefix="training-")
        return
    overhead = queued_versus_direct(args.repeats)
    write_report(
        {"started": started, "machine": machine, **overhead, "length_bucketing": corpora},
        prefix="training-",
    )


def queued_versus_direct(repeats: int) -> dict[str, Any]:
    reset_database()
    token = setup_django()
    web = Gunicorn()
    workers = Clusters(1)
    samples: list[dict[str, Any]] = []
    try:
        time.sleep(2)  # the cluster's processes start
        _, warm = queued_run(token)  # page cache: JAX and Tunix files read once
        direct_run(warm, -1)
        for repeat in range(repeats):
            queued, run_id = queued_run(token)
            direct = direct_run(run_id, repeat)
            sample = {
                "queued_s": round(queued, 3),
                "direct_s": round(direct, 3),
                "overhead_s": round(queued - direct, 3),
                **run_breakdown(run_id),
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    finally:
        workers.stop()
        web.stop()
    queued_median = statistics.median(s["queued_s"] for s in samples)
    direct_median = statistics.median(s["direct_s"] for s in samples)
    limit = direct_median * 1.1 + 2.0
    report = {
        "training": f"tunix-rt/tiny-llama3, demo dataset, {EPOCHS} epochs (24 steps), batch 8",
        "samples": samples,
        "queued_median_s": queued_median,
        "direct_median_s": direct_median,
        "overhead_median_s": round(statistics.median(s["overhead_s"] for s in samples), 3),
        "target_s": round(limit, 3),
        "met": queued_median <= limit,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    return report


def algorithm_overheads(repeats: int) -> dict[str, Any]:
    """Each algorithm queued and direct, alternately within an algorithm, on its demo dataset;
    the direct process's peak memory."""
    reset_database()
    token = setup_django()
    from runs import services

    for key, file_name, _ in {run[0]: run for run in ALGORITHM_RUNS.values()}.values():
        if key == "tunix-demo-v1":
            continue  # the bench's database has the SFT demo already
        with (REPO / "runs" / "demo" / file_name).open("rb") as handle:
            services.dataset_import(key=key, source=handle)
    web = Gunicorn()
    workers = Clusters(1)
    report: dict[str, Any] = {"algorithms": {}}
    try:
        time.sleep(2)  # the cluster's processes start
        for algorithm, (key, _, hyper) in ALGORITHM_RUNS.items():
            fields = {
                "dataset_key": key,
                "model_id": "tunix-rt/tiny-llama3",
                "mode": "local",
                "algorithm": algorithm,
                **hyper,
            }
            queued_run(token, fields)  # page cache: this algorithm's modules read once
            samples = []
            for repeat in range(repeats):
                queued, run_id = queued_run(token, fields)
                direct, peak = direct_run_measured(run_id, repeat)
                sample = {
                    "queued_s": round(queued, 3),
                    "direct_s": round(direct, 3),
                    "overhead_s": round(queued - direct, 3),
                    "direct_peak_rss_gib": round(peak, 3),
                    **run_breakdown(run_id),
                }
                samples.append(sample)
                print(json.dumps({"algorithm": algorithm, **sample}), flush=True)
            queued_median = statistics.median(s["queued_s"] for s in samples)
            direct_median = statistics.median(s["direct_s"] for s in samples)
            limit = direct_median * 1.1 + 2.0
            summary = {
                "hyperparameters": hyper,
                "dataset": key,
                "samples": samples,
                "queued_median_s": queued_median,
                "direct_median_s": direct_median,
                "overhead_median_s": round(statistics.median(s["overhead_s"] for s in samples), 3),
                "peak_rss_gib_max": max(s["direct_peak_rss_gib"] for s in samples),
                "target_s": round(limit, 3),
                "met": queued_median <= limit,
            }
            report["algorithms"][algorithm] = summary
            print(json.dumps({algorithm: {k: v for k, v in summary.items() if k != "samples"}}))
    finally:
        workers.stop()
        web.stop()
    return report


if __name__ == "__main__":
    main()
