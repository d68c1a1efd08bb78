"""A stand-in for the Tunix trainer, driven by the run's model id (fake/<behaviour>).

It reads the run config the worker wrote, records each execution in $FAKE_TRAINER_LOG (one
line per start: run id and pid) so tests can count executions, and then:
  fake/ok            prints a few lines and exits 0
  fake/exit-3        exits 3
  fake/sleep-N       sleeps N seconds, then exits 0
  fake/slow-once     sleeps 60 s the first time it runs for a run, exits 0 at once later
  fake/spawn-sleep   starts two `sleep 120` grandchildren (pids to $FAKE_TRAINER_LOG), sleeps
  fake/ignore-term   ignores SIGTERM and sleeps
  fake/progress-N    reports N steps (TUNIX_PROGRESS lines, 0.4 s apart, loss falling), then
                     its final metrics (TUNIX_RESULT), as the real trainer does
  fake/tune-N        as progress-N (0.25 s apart), with an eval loss every other step, all
                     lower the nearer the learning rate is to 1e-3: a sweep has a best trial
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def record(line: str) -> None:
    log = os.environ.get("FAKE_TRAINER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    run_id = config["run_id"]
    behaviour = config["model"]["id"].removeprefix("fake/")
    record(f"start {run_id} {os.getpid()}")
    print(f"fake trainer: {behaviour} for {run_id}", flush=True)
    if behaviour == "ok":
        for step in range(1, 4):
            print(f"step {step}/3 loss {1.0 / step:.3f}", flush=True)
        return 0
    if behaviour == "exit-3":
        print("something went wrong", file=sys.stderr, flush=True)
        return 3
    if behaviour.startswith("sleep-"):
        time.sleep(float(behaviour.removeprefix("sleep-")))
        return 0
    if behaviour == "slow-once":
        marker = Path(config["output"]["dir"]) / "slow-once.marker"
        if not marker.exists():
            marker.write_text("first attempt")
            time.sleep(60)
        return 0
    if behaviour == "spawn-sleep":
        for _ in range(2):
            child = subprocess.Popen(["sleep", "120"])
            record(f"child {run_id} {child.pid}")
        time.sleep(120)
        return 0
    if behaviour.startswith("progress-"):
        total = int(behaviour.removeprefix("progress-"))
        for step in range(1, total + 1):
            loss = 5.0 / step
            print(f"ordinary log line before step {step}", flush=True)
            progress = {"step": step, "total_steps": total, "loss": loss}
            print("TUNIX_PROGRESS " + json.dumps(progress), flush=True)
            time.sleep(0.4)
        result = {"train_loss": 5.0 / total, "eval_loss": 6.0 / total, "steps": total}
        print("TUNIX_RESULT " + json.dumps({**result, "wall_seconds": total * 0.4}), flush=True)
        return 0
    if behaviour.startswith("tune-"):
        total = int(behaviour.removeprefix("tune-"))
        rate = float(config["training"].get("learning_rate") or 1e-3)
        floor = 0.5 + abs(math.log10(rate) + 3)  # decades away from the best rate
        for step in range(1, total + 1):
            progress = {"step": step, "total_steps": total, "loss": floor + 4.0 / step}
            print("TUNIX_PROGRESS " + json.dumps(progress), flush=True)
            if step % 2 == 0:
                evaluation = {"step": step, "eval_loss": floor + 0.2 + 4.0 / step}
                print("TUNIX_PROGRESS " + json.dumps(evaluation), flush=True)
            time.sleep(0.25)
        result = {"train_loss": floor + 4.0 / total, "eval_loss": floor + 0.2 + 4.0 / total}
        print("TUNIX_RESULT " + json.dumps({**result, "steps": total}), flush=True)
        return 0
    if behaviour == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
        return 0
    print(f"unknown behaviour {behaviour}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
