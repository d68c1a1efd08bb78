"""What mode "ray" adds to a training: the tiny preset trained as a Ray job through the Ray
backend, against the same config trained by a child process as local mode runs it. Writes
bench/results/ray-overhead-<stamp>.json.

    .venv/bin/python bench/ray_overhead.py [--repeats 3] [--epochs 3]

Ray binds to the machine's non-loopback address, so the bench starts a Ray head in a private
network namespace (tests/support/ray_cluster.py) and runs its measuring half there (this file
again, with --inside). That half trains, alternately (the order flipped each round, since the
machine drifts by up to 1.4x from minute to minute):

* direct: ``python -m runs.trainer CONFIG`` as local mode starts it (its argv, environment and
  working directory), from spawn to exit;
* ray: ``execute(RayBackend, spec, ...)`` as the worker calls it, from just before the call to
  its return: the dry-run check that writes the config, connecting, submitting, Ray starting
  the job, the training, following the job's log and reading its final status.

Each training gets a directory of its own: the trainer resumes from any earlier attempt's
checkpoint it finds in its run's directory. Before the rounds, one direct training warms the
disk cache and one ray training is the first job of the fresh head (Ray is slower at it); that
one is reported, neither is counted. Each training's numbers go to stderr as it ends, the table
to stdout. Needs root, Ray and google-tunix (make install-ray). Target: ray <= direct x 1.1 + 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.ray_cluster import ADDRESS, RayHead, missing_reason  # noqa: E402

DEMO = REPO / "runs" / "demo" / "tunix-demo-v1.jsonl"
TARGET_FACTOR, TARGET_SECONDS = 1.1, 3.0
ENTRYPOINT_LINE = "Running entrypoint for job"  # Ray's second header line of a job's log
PROGRESS_LINE = "TUNIX_PROGRESS"  # the trainer's first one comes once its model is built


def settings_env(var: Path) -> dict[str, str]:
    """The settings a worker of mode ray runs with here: production settings on a scratch
    SQLite file (the backends read settings, never the database), the head's Jobs API, and the
    head's nodes running this interpreter on this filesystem."""
    return {
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "SECRET_KEY": "bench-secret-key",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "TUNIX_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'bench.sqlite3'}",
        "TUNIX_TRAINER_COMMAND": "",
        "TUNIX_RAY_ADDRESS": ADDRESS,
        "TUNIX_SHARED_STORAGE": "1",
        "TUNIX_RAY_PYTHON": sys.executable,
    }


# --- inside the namespace --------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (/proc/stat): what a training costs with
    everything it wakes up, Ray's processes included."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall-clock moments (time.time(), the clock Ray stamps jobs with) of one ray training,
    as the supervising loop saw them."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.time())


CLOCK = Clock()


def timed_backend() -> Any:
    """The Ray backend, unchanged but for noting when its job was submitted, when its log
    first showed the entrypoint and the trainer's first progress line, and when its end was
    seen. The notes cost a dict lookup per poll."""
    from runs.execution import ray
    from runs.execution.registry import get_backend

    class TimedRayJob(ray.RayJob):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            CLOCK.mark("submitted")

        def read(self, timeout: float) -> list[tuple[str, bytes]]:
            chunks = super().read(timeout)
            for stream, chunk in chunks:
                if stream == "stdout" and ENTRYPOINT_LINE.encode() in chunk:
                    CLOCK.mark("entrypoint_seen")
                if stream == "stdout" and PROGRESS_LINE.encode() in chunk:
                    CLOCK.mark("progress_seen")
            if self.ended:
                CLOCK.mark("end_seen")
            return chunks

    # start() builds its job by this module-level name.
    setattr(ray, "RayJob", TimedRayJob)  # noqa: B010
    backend = get_backend("ray")
    assert isinstance(backend, ray.RayBackend)
    return backend


def run_spec(var: Path, label: str, mode: str, epochs: int) -> Any:
    """A fresh attempt of the tiny preset on the demo dataset, as run_spec builds one from a
    run row, in a directory of its own."""
    from django.conf import settings

    from runs import model_catalog, training_config
    from runs.datasets import validate_stream
    from runs.dryrun import training_spec
    from runs.execution.base import RunSpec

    with DEMO.open("rb") as handle:
        stats = validate_stream(
            handle,
            max_bytes=settings.TUNIX_DATASET_MAX_BYTES,
            max_record_bytes=settings.TUNIX_DATASET_MAX_RECORD_BYTES,
        )
    run_id = str(uuid.uuid4())  # Ray keeps every submission id for the head's life
    output_dir = var / "runs" / f"{label}-{run_id}"
    output_dir.mkdir(parents=True)
    config = {**training_config.defaults(training_config.SFT), "num_epochs": epochs}
    spec = training_spec(
        run_id=run_id,
        model_id=model_catalog.TINY_MODEL_ID,
        mode=mode,
        dataset_key="tunix-demo-v1",
        dataset_path=DEMO,
        dataset_format=stats.format,
        config=config,
        output_dir=output_dir,
    )
    return RunSpec(
        run_id=run_id,
        attempt=1,
        mode=mode,
        output_dir=output_dir,
        spec=spec,
        dataset_sha256=stats.sha256,
        dataset_records=stats.record_count,
        timeout_seconds=settings.TUNIX_RUN_TIMEOUT_SECONDS,
        loss_curve=[],
        resources=None,  # asked for nothing: one CPU, as entrypoint_resources places it
    )


def direct(var: Path, label: str, epochs: int) -> dict[str, Any]:
    from runs.execution.dryrun import check
    from runs.execution.local import trainer_argv, trainer_environment
    from runs.outcomes import Ending

    run = run_spec(var, label, "local", epochs)
    written = time.perf_counter()
    checked = check(run)  # writes the config, as local mode's prepare does
    check_seconds = time.perf_counter() - written
    assert checked.status == Ending.COMPLETED, checked.message
    busy, started_wall, started = busy_cpu_seconds(), time.time(), time.perf_counter()
    progress_at: float | None = None
    with (run.output_dir / "trainer.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            trainer_argv(run.config_path),
            cwd=run.output_dir,
            env=trainer_environment(),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert proc.stdout is not None
        # Read as local mode does (a pipe), noting the first progress line.
        for line in proc.stdout:
            if progress_at is None and line.startswith(PROGRESS_LINE.encode()):
                progress_at = time.time()
        code = proc.wait()
    seconds = time.perf_counter() - started
    busy = busy_cpu_seconds() - busy
    assert code == 0, f"the direct training exited {code}: see {run.output_dir}"
    return {
        "mode": "direct",
        "seconds": round(seconds, 3),
        "check_seconds": round(check_seconds, 3),
        "to_first_progress_s": round(progress_at - started_wall, 3) if progress_at else None,
        "machine_cpu_s": round(busy, 2),
    }


def through_ray(backend: Any, var: Path, label: str, epochs: int) -> dict[str, Any]:
    from ray.job_submission import JobSubmissionClient

    from runs.execution.base import Supervision, execute
    from runs.execution.ray import submission_id
    from runs.outcomes import Ending

    run = run_spec(var, label, "ray", epochs)
    CLOCK.marks.clear()
    busy, own = busy_cpu_seconds(), own_cpu_seconds()
    started_wall, started = time.time(), time.perf_counter()
    outcome = execute(backend, run, Supervision(heartbeat=lambda updates: True))
    seconds = time.perf_counter() - started
    busy, own = busy_cpu_seconds() - busy, own_cpu_seconds() - own
    assert outcome.status == Ending.COMPLETED, (outcome.message, outcome.stderr[-2000:])
    info = JobSubmissionClient(ADDRESS).get_job_info(submission_id(run.run_id, run.attempt))
    marks = {name: round(at - started_wall, 3) for name, at in CLOCK.marks.items()}
    return {
        "mode": "ray",
        "seconds": round(seconds, 3),
        "submitted_s": marks.get("submitted"),
        "entrypoint_seen_s": marks.get("entrypoint_seen"),
        "to_first_progress_s": marks.get("progress_seen"),
        # Ray's own record: when it ended the job (its entrypoint exited), on the same clock.
        "ray_ended_s": round(info.end_time / 1000 - started_wall, 3),
        "end_seen_s": marks.get("end_seen"),
        "machine_cpu_s": round(busy, 2),
        # The supervising process: the dry-run check, the client and its polls.
        "supervisor_cpu_s": round(own, 2),
    }


def wait_for_jobs_api(timeout: float = 120) -> None:
    """`ray start` returns before its dashboard serves the Jobs API; a cluster a worker submits
    to has long been up, so the bench waits for it rather than count it."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    while True:
        try:
            JobSubmissionClient(ADDRESS).list_jobs()
            return
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def note(result: dict[str, Any]) -> None:
    print(json.dumps(result), file=sys.stderr, flush=True)


def inside(args: argparse.Namespace) -> int:
    import django

    django.setup()
    var = Path(args.var)
    backend = timed_backend()
    wait_for_jobs_api()
    ready = round(time.time() - args.head_up, 3)
    note({"jobs_api_answered_s": ready})

    # Not counted: the first training reads JAX and Tunix from a cold disk cache, and the
    # first job of a fresh head is slower; the direct one first, so the ray one measures Ray.
    note({"round": -1, **direct(var, "warm-up", args.epochs)})
    warm_up = {"round": -1, **through_ray(backend, var, "warm-up", args.epochs)}
    note(warm_up)
    rounds: list[dict[str, Any]] = []
    for index in range(args.repeats):
        order = ["direct", "ray"] if index % 2 == 0 else ["ray", "direct"]
        for mode in order:
            label = f"{index}-{mode}"
            if mode == "direct":
                result = direct(var, label, args.epochs)
            else:
                result = through_ray(backend, var, label, args.epochs)
            result = {"round": index, **result}
            note(result)
            rounds.append(result)
    print(json.dumps({"jobs_api_answered_s": ready, "warm_up": warm_up, "rounds": rounds}))
    return 0


# --- outside: the head, the report ------------------------------------------------------------


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(rounds: list[dict[str, Any]], warm_up: dict[str, Any]) -> dict[str, Any]:
    pairs = []
    for index in sorted({r["round"] for r in rounds}):
        of = {r["mode"]: r for r in rounds if r["round"] == index}
        d, r = of["direct"], of["ray"]
        pairs.append(
            {
                "round": index,
                "direct_s": d["seconds"],
                "ray_s": r["seconds"],
                "overhead_s": round(r["seconds"] - d["seconds"], 3),
                "ratio": round(r["seconds"] / d["seconds"], 3),
                "met": r["seconds"] <= d["seconds"] * TARGET_FACTOR + TARGET_SECONDS,
                # Before the trainer's first progress line: what starting it as a job costs.
                "start_overhead_s": round(r["to_first_progress_s"] - d["to_first_progress_s"], 3),
                # From Ray ending the job to execute() returning: polling and the status read.
                "end_seen_after_s": round(r["seconds"] - r["ray_ended_s"], 3),
                "extra_machine_cpu_s": round(r["machine_cpu_s"] - d["machine_cpu_s"], 2),
            }
        )
    direct_median = median([p["direct_s"] for p in pairs])
    ray_median = median([p["ray_s"] for p in pairs])
    limit = round(direct_median * TARGET_FACTOR + TARGET_SECONDS, 3)
    return {
        "pairs": pairs,
        "median_direct_s": direct_median,
        "median_ray_s": ray_median,
        "median_overhead_s": median([p["overhead_s"] for p in pairs]),
        "median_ratio": median([p["ratio"] for p in pairs]),
        "median_submit_s": median([r["submitted_s"] for r in rounds if r["mode"] == "ray"]),
        "median_start_overhead_s": median([p["start_overhead_s"] for p in pairs]),
        "median_end_seen_after_s": median([p["end_seen_after_s"] for p in pairs]),
        "median_extra_machine_cpu_s": median([p["extra_machine_cpu_s"] for p in pairs]),
        "median_direct_machine_cpu_s": median(
            [r["machine_cpu_s"] for r in rounds if r["mode"] == "direct"]
        ),
        "median_supervisor_cpu_s": median(
            [r["supervisor_cpu_s"] for r in rounds if r["mode"] == "ray"]
        ),
        "warm_up_ray_s": warm_up["seconds"],
        "warm_up_submit_s": warm_up["submitted_s"],
        "warm_up_overhead_s": round(warm_up["seconds"] - direct_median, 3),
        "target_s": limit,
        "target_met": ray_median <= limit,
    }


def table(summary: dict[str, Any], head: dict[str, float]) -> str:
    rows = [
        "| round | direct s | ray s | overhead s | ray / direct | ≤ direct x 1.1 + 3 s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in summary["pairs"]:
        met = "met" if p["met"] else "missed"
        rows.append(
            f"| {p['round'] + 1} | {p['direct_s']:.2f} | {p['ray_s']:.2f} | "
            f"{p['overhead_s']:+.2f} | {p['ratio']:.3f} | {met} |"
        )
    met = "met" if summary["target_met"] else "**missed**"
    rows.append(
        f"| median | {summary['median_direct_s']:.2f} | {summary['median_ray_s']:.2f} | "
        f"{summary['median_overhead_s']:+.2f} | {summary['median_ratio']:.3f} | "
        f"≤ {summary['target_s']:.2f}: {met} |"
    )
    return "\n".join(
        [
            *rows,
            "",
            f"head: `ray start` {head['start_s']:.1f} s, its Jobs API answering "
            f"{head['jobs_api_answered_s']:.1f} s after that, `ray stop` {head['stop_s']:.1f} s",
            f"first job of the head (not counted): {summary['warm_up_ray_s']:.2f} s, "
            f"{summary['warm_up_overhead_s']:+.2f} s over the median direct, "
            f"submitted after {summary['warm_up_submit_s']:.2f} s",
            f"later jobs: submitted after {summary['median_submit_s']:.2f} s (median); "
            f"first progress {summary['median_start_overhead_s']:+.2f} s later than direct; "
            f"end seen {summary['median_end_seen_after_s']:.2f} s after Ray ended the job",
            f"machine CPU: {summary['median_direct_machine_cpu_s']:.1f} s a direct training, "
            f"{summary['median_extra_machine_cpu_s']:+.1f} s for a ray one (median of pairs), of "
            f"which the supervising process {summary['median_supervisor_cpu_s']:.2f} s",
        ]
    )


def outside(args: argparse.Namespace) -> int:
    reason = missing_reason()
    if reason is not None:
        print(f"cannot start a Ray head here: {reason}", file=sys.stderr)
        return 1
    var = Path(tempfile.mkdtemp(prefix="tunix-rt-bench-ray-"))
    env = {**os.environ, **settings_env(var)}
    argv = [sys.executable, str(Path(__file__).resolve()), "--inside", "--var", str(var)]
    argv += ["--repeats", str(args.repeats), "--epochs", str(args.epochs)]
    head: RayHead | None = None
    head_times: dict[str, float] = {}
    try:
        head = RayHead(num_cpus=os.cpu_count() or 2)
        head_times["start_s"] = round(head.start_seconds, 3)
        argv += ["--head-up", str(time.time())]
        print(f"Ray head up in {head.start_seconds:.1f} s", file=sys.stderr, flush=True)
        # stderr passes through: each training's result as it ends.
        done = subprocess.run(
            head.inside(argv), env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False
        )
        if done.returncode != 0:
            print(f"the measuring process exited {done.returncode}", file=sys.stderr)
            return 1
    finally:
        if head is not None:
            stopping = time.monotonic()
            head.stop()
            head_times["stop_s"] = round(time.monotonic() - stopping, 3)
        shutil.rmtree(var, ignore_errors=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    head_times["jobs_api_answered_s"] = measured["jobs_api_answered_s"]
    summary = summarise(measured["rounds"], measured["warm_up"])
    result = {
        "bench": "ray-overhead",
        "when": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "epochs": args.epochs,
        "repeats": args.repeats,
        "target": f"ray <= direct x {TARGET_FACTOR} + {TARGET_SECONDS} s",
        "head": head_times,
        "warm_up": measured["warm_up"],
        "trainings": measured["rounds"],
        "summary": summary,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = REPO / "bench" / "results" / f"ray-overhead-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(summary, head_times))
    print(f"written to {out.relative_to(REPO)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="rounds of one training each way")
    parser.add_argument("--epochs", type=int, default=3, help="the demo dataset: 8 steps each")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--var", help=argparse.SUPPRESS)
    parser.add_argument("--head-up", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    return inside(args) if args.inside else outside(args)


if __name__ == "__main__":
    sys.exit(main())
